"""Screens of the TUI: runs, browse, verify and the modals."""
