"""Live versions: the store's pointer (training.store), the runtime swapping versions in (ServedModels.refresh,
serving.following), versions asked by name, and every fault on the way: the serving version keeps answering."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from serving.errors import NotReady, UnknownModel
from serving.following import FOLLOW_WITHIN_S, StoreFollower
from serving.runtime import MAX_PINNED, ServedModels, load_models
from serving_store import HEART_ROW, build_store
from test_serving import PHOTO_PNG
from training import store_cli
from training.store import (LIVE_FILE, MANIFEST_FILE, MODEL_FILE, StoreError, delete_version, live, promote,
                            publish_model, read_manifest, rollback, rollback_target, versions)


@pytest.fixture()
def store(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    """A copy of the serving tests' store whose fashion has v1, v2 and v3 (v1's graph published again)."""
    copy = tmp_path / "store"
    shutil.copytree(build_store(tmp_path_factory.getbasetemp() / "serving"), copy)
    first = copy / "fashion" / "v1"
    for _ in range(2):
        publish_model(copy, "fashion", first / MODEL_FILE, read_manifest(first), "card {version}")
    promote(copy, "fashion", "v1")  # v1 live, v2 and v3 candidates
    return copy


def damage(folder: Path) -> None:
    data = bytearray((folder / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / MODEL_FILE).write_bytes(bytes(data))


def events(models: ServedModels) -> list[tuple[str, str | None, str]]:
    seen: list[tuple[str, str | None, str]] = []
    models.on_swap = lambda name, version, result: seen.append((name, version, result))
    return seen


# -- the pointer


def test_without_a_pointer_the_highest_version_is_live(store: Path) -> None:
    (store / "fashion" / LIVE_FILE).unlink()
    assert live(store, "fashion").name == "v3" and live(store, "heart").name == "v1"
    promote(store, "fashion", "v2")
    assert live(store, "fashion").name == "v2" and rollback(store, "fashion") == "v3"  # back to the highest


def test_promotions_stack_up_and_roll_back_one_at_a_time(store: Path) -> None:
    assert live(store, "fashion").name == "v1"
    promote(store, "fashion", "v3")
    promote(store, "fashion", "v2")
    assert live(store, "fashion").name == "v2" and rollback_target(store, "fashion") == "v3"
    assert [rollback(store, "fashion") for _ in range(2)] == ["v3", "v1"]  # back through every promotion
    with pytest.raises(StoreError, match="no earlier"):
        rollback(store, "fashion")
    log = json.loads((store / "fashion" / LIVE_FILE).read_text())["log"]
    assert [e["action"] for e in log] == ["promote"] * 3 + ["rollback"] * 2  # v1 promoted by its training run


def test_a_rollback_skips_versions_deleted_since(store: Path) -> None:
    promote(store, "fashion", "v2")
    promote(store, "fashion", "v3")
    delete_version(store, "fashion", "v2")
    assert rollback(store, "fashion") == "v1" and [p.name for p in versions(store, "fashion")] == ["v1", "v3"]


@pytest.mark.parametrize("text, word", [("{not json", "cannot be read"), ('{"live": "v9", "stack": ["v9"]}', "v9"),
                                        ('{"live": "v1"}', "live version"), ('["v1"]', "live version"),
                                        ('{"live": "../../etc", "stack": ["../../etc"]}', "live version")])
def test_a_damaged_pointer_is_refused_with_a_reason(store: Path, text: str, word: str) -> None:
    (store / "fashion" / LIVE_FILE).write_text(text)
    with pytest.raises(StoreError, match=word):
        live(store, "fashion")


def test_promoting_a_version_that_is_not_there_changes_nothing(store: Path) -> None:
    before = (store / "fashion" / LIVE_FILE).read_bytes()
    for version in ("v9", "latest", "../heart/v1"):
        with pytest.raises(StoreError, match="no version"):
            promote(store, "fashion", version)
    assert (store / "fashion" / LIVE_FILE).read_bytes() == before


def test_promotions_at_the_same_moment_leave_a_whole_pointer(store: Path) -> None:
    threads = [threading.Thread(target=promote, args=(store, "fashion", v)) for v in ("v2", "v3") * 10]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pointer = json.loads((store / "fashion" / LIVE_FILE).read_text())
    assert pointer["live"] in ("v2", "v3") and len(pointer["log"]) >= 2 and live(store, "fashion").is_dir()


# -- the runtime follows the pointer


def test_a_promoted_version_is_swapped_in_and_a_request_keeps_the_version_it_started_with(store: Path) -> None:
    models = load_models(store)
    seen = events(models)
    holding = models.get("fashion", "classify")  # a request in flight holds its version
    promote(store, "fashion", "v2")
    assert models.refresh() == ["fashion"] and seen == [("fashion", "v2", "ok")]
    assert models.classify("fashion", PHOTO_PNG)["version"] == "v2"
    assert holding.version == "v1" and holding.run is not None and holding.ready  # still answers
    assert models.refresh() == []  # nothing changed since


@pytest.mark.parametrize("fault", ["damaged file", "manifest not the graph's", "missing file", "garbage pointer",
                                   "version folder deleted", "store deleted"])
def test_a_fault_never_replaces_the_serving_version(store: Path, fault: str) -> None:
    models = load_models(store)
    seen = events(models)
    candidate = store / "fashion" / "v2"
    if fault == "damaged file":
        damage(candidate)
    elif fault == "manifest not the graph's":
        manifest = read_manifest(candidate)
        manifest["labels"] = manifest["labels"][:-1]
        (candidate / MANIFEST_FILE).write_text(json.dumps(manifest))
    elif fault == "missing file":
        (candidate / MODEL_FILE).unlink()
    if fault in ("damaged file", "manifest not the graph's", "missing file"):
        promote(store, "fashion", "v2")
    elif fault == "garbage pointer":
        (store / "fashion" / LIVE_FILE).write_text("{")
    elif fault == "version folder deleted":
        shutil.rmtree(store / "fashion" / "v1")
    else:
        shutil.rmtree(store)
    for _ in range(2):
        models.refresh()  # a second look says nothing new
    assert models.classify("fashion", PHOTO_PNG)["version"] == "v1" and models.ready
    if fault not in ("version folder deleted", "store deleted"):
        assert seen == [("fashion", "v2" if "pointer" not in fault else None, "failed")], seen
        assert "not swapped in" in models.describe()["models"]["fashion"]["failed"]


def test_a_version_is_answered_by_name(store: Path) -> None:
    models = load_models(store)
    assert models.classify("fashion@v3", PHOTO_PNG)["version"] == "v3"
    assert models.classify("fashion", PHOTO_PNG)["version"] == "v1"
    assert models.predict_heart(HEART_ROW, "heart@v1")["version"] == "v1"
    for unknown in ("fashion@v9", "fashion@latest", "fashion@../heart/v1", "digits@v1"):
        with pytest.raises(UnknownModel):
            models.classify(unknown, PHOTO_PNG)
    damage(store / "fashion" / "v2")
    with pytest.raises(NotReady, match="sha256"):
        models.classify("fashion@v2", PHOTO_PNG)


def test_few_named_versions_are_kept_loaded(store: Path) -> None:
    for _ in range(MAX_PINNED + 1):
        publish_model(store, "fashion", store / "fashion" / "v1" / MODEL_FILE, read_manifest(store / "fashion" / "v1"),
                      "card")
    models = load_models(store)
    for number in range(2, MAX_PINNED + 4):
        models.classify(f"fashion@v{number}", PHOTO_PNG)
    pinned = models.describe()["models"]["fashion"]["pinned"]
    assert len(pinned) == MAX_PINNED and f"v{MAX_PINNED + 3}" in pinned and "v2" not in pinned


def test_a_named_version_deleted_while_in_use_keeps_answering_from_memory(store: Path) -> None:
    models = load_models(store)
    models.classify("fashion@v2", PHOTO_PNG)
    delete_version(store, "fashion", "v2")
    assert models.classify("fashion@v2", PHOTO_PNG)["version"] == "v2"


def test_models_says_where_each_model_stands(store: Path) -> None:
    models = load_models(store)
    models.classify("fashion@v2", PHOTO_PNG)
    fashion = models.describe()["models"]["fashion"]
    assert fashion["live"] == "v1" and fashion["pinned"] == ["v2"] and fashion["failed"] is None
    assert [(v["version"], v["loaded"]) for v in fashion["versions"]] == [("v1", True), ("v2", True), ("v3", False)]
    assert all(isinstance(v["test_figure"], float) for v in fashion["versions"])


def test_the_follower_swaps_within_its_promise(store: Path) -> None:
    models = load_models(store)
    follower = StoreFollower(models).start()
    try:
        for version in ("v3", "v2"):
            promote(store, "fashion", version)
            deadline = time.monotonic() + FOLLOW_WITHIN_S
            while models.models["fashion"].version != version and time.monotonic() < deadline + 5:
                time.sleep(0.05)
            assert models.models["fashion"].version == version and time.monotonic() < deadline, version
        rollback(store, "fashion")
        time.sleep(FOLLOW_WITHIN_S)
        assert models.models["fashion"].version == "v3"
    finally:
        follower.stop()
        follower.thread.join(timeout=10)
    assert not follower.thread.is_alive()


# -- python -m training.store


def cli(store: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = store_cli.main(["--store", str(store), *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_the_store_command_lists_promotes_and_rolls_back(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = cli(store, "list", capsys=capsys)
    assert code == 0 and "live v1" in text and "heart:" in text and "% test accuracy" in text
    assert cli(store, "promote", "fashion", "v3", capsys=capsys)[0] == 0 and live(store, "fashion").name == "v3"
    code, text = cli(store, "list", capsys=capsys)
    assert "live v3" in text and "rollback v1" in text
    assert cli(store, "rollback", "fashion", capsys=capsys) == (0, "fashion v1 is live again\n")


@pytest.mark.parametrize("break_it, word", [(lambda v: damage(v), "sha256"),
                                            (lambda v: (v / MODEL_FILE).unlink(), "FileNotFoundError"),
                                            (lambda v: (v / MANIFEST_FILE).write_text("{"), "JSON")])
def test_a_damaged_version_is_not_promoted_and_nothing_changes(store: Path, capsys: pytest.CaptureFixture[str],
                                                               break_it, word: str) -> None:
    break_it(store / "fashion" / "v2")
    pointer = (store / "fashion" / LIVE_FILE).read_bytes()
    code, text = cli(store, "promote", "fashion", "v2", capsys=capsys)
    assert code == 1 and "refused, nothing changed" in text and word in text
    assert (store / "fashion" / LIVE_FILE).read_bytes() == pointer
    code, text = cli(store, "verify", capsys=capsys)
    assert code == 1 and "FAIL fashion v2" in text and "ok fashion v1" in text
    assert cli(store, "promote", "fashion", "v9", capsys=capsys)[0] == 1


def test_gc_never_deletes_the_live_version_or_its_rollback_target(store: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    promote(store, "fashion", "v2")  # live v2, rollback to v1; v3 newest
    code, text = cli(store, "gc", "fashion", "--keep", "1", capsys=capsys)
    assert code == 0 and [p.name for p in versions(store, "fashion")] == ["v1", "v2", "v3"]
    promote(store, "fashion", "v3")  # live v3, rollback to v2: v1 may go
    assert cli(store, "gc", "fashion", "--keep", "1", capsys=capsys)[0] == 0
    assert [p.name for p in versions(store, "fashion")] == ["v2", "v3"]
    assert cli(store, "gc", "fashion", "--keep", "0", capsys=capsys)[0] == 1


def test_the_store_command_is_torch_free(store: Path) -> None:
    probe = ("import sys; from training import store_cli; code = store_cli.main(['--store', sys.argv[1], 'verify']); "
             "sys.exit(3 if 'torch' in sys.modules else code)")
    done = subprocess.run([sys.executable, "-c", probe, str(store)], cwd=Path(__file__).parents[1],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_demo_over_the_same_models_describes_the_version_now_live(store: Path) -> None:
    from demo import ui, views

    models = load_models(store)
    ui.build_demo(models)
    assert "**fashion v1**" in ui.about_markdown(models) and "`fashion` v1" in ui.header_markdown(models)
    promote(store, "fashion", "v2")
    models.refresh()
    assert "**fashion v2**" in ui.about_markdown(models) and "`fashion` v2" in ui.header_markdown(models)
    assert views.classify(models, "fashion", PHOTO_PNG).confidences  # answered by the new version
