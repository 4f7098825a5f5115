"""Core library of OpenRouter Chat: everything except the Gradio wiring."""
