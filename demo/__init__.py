"""The Gradio demo: draw or upload, see what the model sees and what it answers (demo.app.build)."""
