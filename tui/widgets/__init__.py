"""Widgets of the TUI: the entry table, inspector, histogram and status bar."""
