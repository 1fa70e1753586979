"""The demo's page, built from whatever models a store publishes: one tab per kind of model, and an about tab.

build_demo(models) lays out the tabs and wires each input to a function of demo.views; nothing else
runs at build time. The API names (classify_drawing, classify_upload, reconstruct_upload,
reconstruct_drawing, heart) are what gradio_client calls.
"""

from __future__ import annotations

from typing import Any, Callable

import gradio as gr

from serving import gradio_compat
from serving.runtime import HEART_MODEL, ServedModels

from . import views

CANVAS_SIZE = (280, 280)  # canvas pixels: 10x MNIST's 28, room for a digit drawn with a mouse
BRUSH_RADIUS = 12         # canvas pixels: a stroke about as thick, relative to the digit, as MNIST's pen
MAX_FILE_SIZE = "10mb"    # uploads larger than this are refused by Gradio before they reach a model
LAUNCH_OPTIONS: dict[str, Any] = {  # shared by `python -m demo` and serving.ui_app
    "max_file_size": MAX_FILE_SIZE,
    "ssr_mode": False,             # no Node server: the page is the static build Gradio ships
    "footer_links": ["api", "settings"],
}
CANVAS_CLASS = "demo-canvas"
DRAW, UPLOAD = "draw", "upload"  # the classify tab's two ways in, as tab ids

# Gradio 6's Sketchpad opens with no tool selected ("select the draw tool to start") and drops back to
# none after its clear button; Python cannot choose its tool. Select the brush on every visible canvas
# that shows no active tool, so a visitor can draw at once.
SELECT_BRUSH_JS = f"""
() => {{
  const selectBrush = () => document.querySelectorAll(".{CANVAS_CLASS}").forEach((pad) => {{
    if (pad.offsetParent === null || pad.querySelector("button.highlight")) return;
    const brush = pad.querySelector('button[aria-label="Brush"]');
    if (brush) brush.click();
  }});
  selectBrush();
  setInterval(selectBrush, 300);
}}
"""


def clear_canvas_js(elem_id: str) -> str:
    """Page script that presses the Sketchpad's own clear button (its trash icon), as a visitor would.

    Not a Python event whose output is the Sketchpad (gradio 6.31): each progress update of such an event
    reaches the canvas only after Gradio has re-uploaded the drawing (AppTree.update_state awaits the
    component's get_data), so the updates land out of order; a stale "pending" landing last leaves the
    canvas under a "processing" overlay that takes every later stroke (issue 18). Nor does a second None
    clear anything: the Sketchpad's value is already empty after the first.
    """
    return f"""() => document.querySelector('#{elem_id} button[aria-label="Clear canvas"]')?.click()"""


def sketchpad(elem_id: str) -> gr.Sketchpad:
    """A white canvas with a black pen, ready to draw; its value's composite is a PNG file."""
    return gr.Sketchpad(type="filepath", format="png", canvas_size=CANVAS_SIZE, layers=False, label="Draw here",
                        brush=gr.Brush(default_size=BRUSH_RADIUS, colors=["#000000"], color_mode="fixed"),
                        elem_id=elem_id, elem_classes=CANVAS_CLASS)


def upload_box(label: str, elem_id: str) -> gr.Image:
    """An upload field whose file reaches the runtime as sent (image_mode=None: Gradio does not re-encode it)."""
    return gr.Image(type="filepath", image_mode=None, sources=["upload", "clipboard"], label=label, elem_id=elem_id)


def picture(label: str, elem_id: str | None = None, **kwargs: Any) -> gr.Image:
    """A picture the demo shows, sent as PNG so every pixel arrives as computed."""
    return gr.Image(label=label, interactive=False, format="png", buttons=[], elem_id=elem_id, **kwargs)


def examples(paths: list[str], upload: gr.Image, label: str, elem_id: str) -> None:
    """Clickable thumbnails that load a picture into `upload` (whose change event answers it)."""
    if paths:
        gr.Examples([[path] for path in paths], inputs=[upload], label=label, examples_per_page=12, elem_id=elem_id)


def header_markdown(models: ServedModels) -> str:
    served = [f"`{m.name}` {m.version}" for m in models.models.values() if m.ready]
    lines = ["# classic-dl: draw, upload, and see what the models see",
             "Models in the store: " + (", ".join(served) if served else "**none yet** (the store is empty)") + "."]
    missing = views.unavailable(models)
    if missing:
        lines[-1] += " Not available yet: " + ", ".join(f"`{n}`" for n in missing) + " (see *About the models*)."
    return "\n\n".join(lines)


def classify_tab(models: ServedModels) -> None:
    names = views.image_classifiers(models)
    if not names:
        gr.Markdown("**No image classifier is published yet.** Train one (for example "
                    "`python -m training.fit fashion_cnn`) and restart the demo.")
        return
    with gr.Row():
        with gr.Column(scale=3):
            model = gr.Dropdown([(views.model_choice(models.models[n]), n) for n in names], value=names[0],
                                label="Model", interactive=len(names) > 1, elem_id="classify-model")
            with gr.Tabs(selected=UPLOAD if views.takes_photos(models.models[names[0]]) else DRAW) as inputs:
                with gr.Tab("Draw", id=DRAW):
                    sketch = sketchpad("classify-canvas")
                    gr.Markdown("Pen size: the ⊘ button beside the canvas. Predictions follow every stroke.")
                    clear = gr.Button("Clear the canvas", elem_id="classify-clear")
                with gr.Tab("Upload or pick an example", id=UPLOAD):
                    upload = upload_box("Picture", "classify-upload")
                    example_sets = []
                    for n in names:
                        with gr.Column(visible=n == names[0]) as column:
                            found = views.example_files(views.dataset_of(models.models[n]))
                            examples([path for path, _ in found], upload, f"Test-set examples for {n} (click one)",
                                     f"classify-examples-{n}")
                        example_sets.append(column)
        with gr.Column(scale=2):
            verdict = gr.Markdown(views.DRAW_SOMETHING, elem_id="classify-verdict")
            label = gr.Label(num_top_classes=5, show_heading=False, label="Top classes", elem_id="classify-label")
            with gr.Row():
                seen = picture("What the model sees (its input, enlarged)", "classify-seen", height=260)
                looks = picture(views.LOOKS, "classify-looks", height=260)
            looks_note = gr.Markdown(views.LOOKS_HOW, elem_id="classify-looks-note")
            with gr.Accordion("About this model", open=False):
                about = gr.Markdown(views.about_markdown(models.models[names[0]]))
    last = gr.State(None)  # the bytes of the latest picture, so a change of model re-answers it

    def answer(name: str, image: bytes | None) -> tuple:
        result = views.classify(models, name, image)
        return result.confidences, result.seen, result.looks.picture, result.looks.note, result.verdict, image

    def look_for(name: str, image: bytes | None, clicked: gr.SelectData) -> tuple:
        """Where the model looks for the class clicked in the label list."""
        if image is None:
            return gr.skip(), gr.skip()
        looks = views.where_it_looks(models, name, image, clicked.value)
        return looks.picture, looks.note

    def from_drawing(name: str, drawing: dict | None) -> tuple:
        return answer(name, views.sketch_bytes(drawing))

    def from_upload(name: str, path: str | None) -> tuple:
        return answer(name, views.read_upload(path))

    def switch_model(name: str, image: bytes | None) -> tuple:
        shown = [gr.Column(visible=n == name) for n in names]
        # A photo model gets its test-set examples in front of the canvas, which it cannot read.
        tab = gr.Tabs(selected=UPLOAD) if views.takes_photos(models.models[name]) else gr.skip()
        return (*answer(name, image), views.about_markdown(models.models[name]), tab, *shown)

    outputs = [label, seen, looks, looks_note, verdict, last]
    live = dict(outputs=outputs, trigger_mode="always_last", show_progress="hidden")
    sketch.change(from_drawing, [model, sketch], api_name="classify_drawing", **live)
    upload.change(from_upload, [model, upload], api_name="classify_upload", **live)
    model.change(switch_model, [model, last], [*outputs, about, inputs, *example_sets], api_visibility="private")
    clear.click(None, js=clear_canvas_js(sketch.elem_id), api_visibility="private")
    label.select(look_for, [model, last], [looks, looks_note], trigger_mode="always_last", show_progress="hidden",
                 api_visibility="private")


def reconstruct_tab(models: ServedModels) -> None:
    names = views.reconstructors(models)
    if not names:
        gr.Markdown("**No autoencoder is published yet.** Train one (`python -m training.fit fashion_autoencoder`) "
                    "and restart the demo.")
        return
    first = models.models[names[0]]
    gr.Markdown("The autoencoder squeezes a 28x28 picture through a few numbers and rebuilds it. It was "
                "trained on noisy pictures to give back clean ones: here it gets a noisy version of yours.")
    with gr.Row():
        with gr.Column(scale=2):
            model = gr.Dropdown([(n, n) for n in names], value=names[0], label="Model",
                                interactive=len(names) > 1, elem_id="reconstruct-model")
            with gr.Tabs():
                with gr.Tab("Upload or pick an example"):
                    upload = upload_box("Clothing picture", "reconstruct-upload")
                    dataset = views.dataset_of(first)
                    examples([path for path, _ in views.example_files(dataset)], upload,
                             f"Test-set examples ({dataset}, click one)", "reconstruct-examples")
                with gr.Tab("Draw"):
                    sketch = sketchpad("reconstruct-canvas")
            noise = gr.Slider(0.0, 0.6, value=views.noise_level(first), step=0.05, label="Noise amplitude",
                              info="uniform noise added to every pixel; the model was trained with "
                                   f"{views.noise_level(first):g}")
        with gr.Column(scale=3):
            with gr.Row():
                original = picture("Original (as the model's data set)")
                noisy = picture("Noisy version (the model's input)")
                rebuilt = picture("Reconstruction", "reconstruct-output")
            report = gr.Markdown(views.RECONSTRUCT_SOMETHING, elem_id="reconstruct-error")
            with gr.Accordion("About this model", open=False):
                gr.Markdown(views.about_markdown(first))
    last = gr.State(None)

    def answer(name: str, image: bytes | None, amplitude: float) -> tuple:
        r = views.reconstruct(models, name, image, amplitude)
        return r.original, r.noisy, r.reconstruction, r.report, image

    def from_upload(name: str, path: str | None, amplitude: float) -> tuple:
        return answer(name, views.read_upload(path), amplitude)

    def from_drawing(name: str, drawing: dict | None, amplitude: float) -> tuple:
        return answer(name, views.sketch_bytes(drawing), amplitude)

    outputs = [original, noisy, rebuilt, report, last]
    live = dict(outputs=outputs, trigger_mode="always_last", show_progress="hidden")
    upload.change(from_upload, [model, upload, noise], api_name="reconstruct_upload", **live)
    sketch.change(from_drawing, [model, sketch, noise], api_name="reconstruct_drawing", **live)
    for changed in (noise.release, model.change):
        changed(answer, [model, last, noise], api_visibility="private", **live)


def heart_tab(models: ServedModels) -> None:
    problem = views.heart_status(models)
    if problem:
        gr.Markdown(problem, elem_id="heart-status")
        return
    gr.Markdown("One patient's measurements, as in the heart failure prediction data set. "
                "0 for blood pressure or cholesterol means *not measured*, as the data set writes it.")
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Row():
                age = gr.Slider(20, 100, value=54, step=1, label="Age", info="years")
                sex = gr.Dropdown([("Male", "M"), ("Female", "F")], value="M", label="Sex")
                pain = gr.Dropdown([("Asymptomatic", "ASY"), ("Non-anginal pain", "NAP"),
                                    ("Atypical angina", "ATA"), ("Typical angina", "TA")],
                                   value="ASY", label="Chest pain type")
            with gr.Row():
                bp = gr.Number(132, minimum=0, maximum=250, precision=0, label="Resting blood pressure",
                               info="mm Hg (0: not measured)")
                cholesterol = gr.Number(200, minimum=0, maximum=700, precision=0, label="Cholesterol",
                                        info="mg/dl (0: not measured)")
                sugar = gr.Dropdown([("No (at most 120 mg/dl)", 0), ("Yes (over 120 mg/dl)", 1)], value=0,
                                    label="Fasting blood sugar over 120 mg/dl")
            with gr.Row():
                ecg = gr.Dropdown([("Normal", "Normal"), ("ST-T wave abnormality", "ST"),
                                   ("Left ventricular hypertrophy", "LVH")], value="Normal", label="Resting ECG")
                max_hr = gr.Slider(60, 220, value=140, step=1, label="Maximum heart rate", info="bpm")
                angina = gr.Dropdown([("No", "N"), ("Yes", "Y")], value="N", label="Exercise-induced angina")
            with gr.Row():
                oldpeak = gr.Slider(-3.0, 7.0, value=1.0, step=0.1, label="Oldpeak",
                                    info="ST depression induced by exercise, mm")
                slope = gr.Dropdown([("Up", "Up"), ("Flat", "Flat"), ("Down", "Down")], value="Up",
                                    label="ST slope (peak exercise)")
            submit = gr.Button("Estimate", variant="primary", elem_id="heart-submit")
        with gr.Column(scale=2):
            label = gr.Label(label="Estimate", elem_id="heart-label")
            explanation = gr.Markdown(elem_id="heart-explanation")
            with gr.Accordion("About this model", open=False):
                gr.Markdown(views.about_markdown(models.models[HEART_MODEL]))
    fields = [age, sex, pain, bp, cholesterol, sugar, ecg, max_hr, angina, oldpeak, slope]

    def estimate(*values: Any) -> tuple:
        return views.predict_heart(models, dict(zip(views.HEART_FIELDS, values)))

    submit.click(estimate, fields, [label, explanation], api_name="heart")
    rows = views.examples_index().get("heart", [])
    if rows:
        gr.Examples([[e["row"][f] for f in views.HEART_FIELDS] for e in rows], inputs=fields,
                    outputs=[label, explanation], fn=estimate, run_on_click=True, cache_examples=False,
                    example_labels=[f"{e['label']}: {e['source']}" for e in rows], elem_id="heart-examples",
                    label="Rows from the data set's test split, with their true outcome (click one)")


def about_markdown(models: ServedModels) -> str:
    """Every model's facts, its live version's, and what is not available yet."""
    if not models.models:
        return "No models are published yet: `python -m training.fit --list` shows what can be trained."
    parts = [views.about_markdown(served) for served in models.models.values()]
    missing = views.unavailable(models)
    if missing:
        parts.append("**Not available yet:**\n\n" + "\n".join(f"- `{n}`: {why}" for n, why in missing.items()))
    return "\n\n---\n\n".join(parts)


def about_tab(models: ServedModels) -> gr.Markdown:
    return gr.Markdown(about_markdown(models), elem_id="about-models")


# The page's tabs, in order: (title, id, what builds its content). A new tab is one more entry.
TABS: tuple[tuple[str, str, Callable[[ServedModels], Any]], ...] = (
    ("Classify", "classify", classify_tab),
    ("Reconstruct", "reconstruct", reconstruct_tab),
    ("Heart risk", "heart", heart_tab),
    ("About the models", "about", about_tab),
)


def build_demo(models: ServedModels) -> gr.Blocks:
    """The whole page for the models of one store; works with an empty store too."""
    gradio_compat.use_own_cache_folder()  # the examples it caches now, and the files it makes later
    with gr.Blocks(title="classic-dl demo", analytics_enabled=False) as demo:
        header = gr.Markdown(header_markdown(models))
        with gr.Tabs():
            built = {}
            for title, tab_id, content in TABS:
                with gr.Tab(title, id=tab_id):
                    built[tab_id] = content(models)
        demo.load(None, js=SELECT_BRUSH_JS)
        # The live versions may have changed since the page was built (serving.following): said afresh per visit.
        demo.load(lambda: (header_markdown(models), about_markdown(models)), outputs=[header, built["about"]],
                  api_visibility="private", show_progress="hidden")
    return demo
