"""The Gradio app's parts: request handlers and preview drawings. `app.py` lays them out."""
