"""Building blocks: attention, positional encodings, layers, dropout, losses and the model configs."""
