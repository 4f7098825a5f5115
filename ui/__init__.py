"""Gradio wiring: one module per panel. Only this package imports gradio."""
