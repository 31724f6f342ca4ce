"""Shared pieces every layer uses: the user-error type, path rules, checksums, run-folder rules, exits. Imports nothing else of ours."""
