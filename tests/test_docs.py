"""The documentation: its example runs and plays the trainer's game; it points at nothing outside
the repository."""

import copy
import re
from pathlib import Path

import pytest
import torch

from adios.config import load_config
from adios.train import Models, train_step

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", ROOT / "RESULTS.md", ROOT / "BENCHMARKS.md",
               *(ROOT / "docs").glob("*.md")])
# What a reader of the repository cannot follow: the project's private notes and paths, issue
# numbers, spec section numbers. Scratch paths such as /tmp/cifar10 in example commands are fine.
FORBIDDEN = {
    "a path into the project's shared folder": r"\.\./shared|(?<![\w.])shared/data",
    "an absolute path of the development machine": r"/work/",
    "an issue number": r"\bissues? #?\d+",
    "the private spec": r"ADIOS\.md",
    "a spec section number": r"§",
}
PARENT_PATH = r"(?<![\w.])(?:\.\./)+[\w./-]*"  # allowed only where it stays in the repository


def example(path: Path) -> str:
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)
    assert blocks, f"{path.name} has no python example"
    return blocks[0]


def test_own_loop_example_runs_and_makes_the_trainers_moves():
    code = example(ROOT / "docs" / "own-loop.md")
    setup, loop = code.split("# --- the loop\n")
    ns: dict = {}
    exec(compile(setup, "own-loop.md", "exec"), ns)  # noqa: S102 - our own documentation
    start = {name: copy.deepcopy(ns[name]) for name in ("objective", "masker")}
    exec(compile(loop, "own-loop.md", "exec"), ns)  # noqa: S102
    assert ns["features"].shape == (ns["batch_size"], ns["backbone"].out_dim)
    assert ns["views"].shape == (4 * ns["batch_size"], 3, 32, 32)

    # replay the same batches through the trainer's train_step: the same parameters come out
    cfg = load_config(["preset=shapes-paper", "masking.mode=adios", "data.image_size=32",
                       f"masking.alpha_sparsity={ns['alpha']}"])
    objective, masker = start["objective"], start["masker"]
    encoder_opt = torch.optim.AdamW(objective.parameters(), lr=2e-3)
    masker_opt = torch.optim.AdamW(masker.parameters(), lr=2e-3)
    initial = [p.detach().clone() for p in masker.parameters()]
    models = Models(objective, masker, probe=None)
    generator = torch.Generator().manual_seed(0)
    images = ns["images"]
    for step in range(ns["steps"]):
        batch = images[torch.randint(len(images), (ns["batch_size"],), generator=generator)]
        a, b = ns["augment"](batch, generator)
        train_step(cfg, models, encoder_opt, masker_opt, a, b, None, generator)
        objective.after_encoder_step(step, ns["steps"])
    for ours, theirs in ((objective, ns["objective"]), (masker, ns["masker"])):
        for (name, p), q in zip(ours.state_dict().items(), theirs.state_dict().values(),
                                strict=True):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    assert not all(torch.equal(p, q) for p, q in zip(masker.parameters(), initial, strict=True))


def test_readme_python_example_runs_on_a_run_directory(tmp_path):
    from adios.cli import main

    run_dir = tmp_path / "run"
    assert main(["train", f"run_dir={run_dir}", "preset=shapes-paper", "data.num_train=16",
                 "data.num_val=8", "data.num_test=8", "model.width=4", "masker.fbase=8",
                 "objective.proj_hidden=32", "objective.proj_out=16", "optim.batch_size=16",
                 "train.knn_bank=16", "train.epochs=1", "train.progress=false",
                 "train.device=cpu"]) == 0
    code = example(ROOT / "README.md")
    assert '"runs/my-run"' in code
    ns: dict = {}
    exec(compile(code.replace('"runs/my-run"', repr(str(run_dir))), "README.md", "exec"), ns)  # noqa: S102
    assert ns["features"].shape == (8, 32)  # width 4: 8 * 4 features
    assert ns["masker"].adios_metadata["n_masks"] == 4


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_docs_refer_to_nothing_outside_the_repository(path):
    text = path.read_text()
    for what, pattern in FORBIDDEN.items():
        hits = [m.group(0) for m in re.finditer(pattern, text, flags=re.I)]
        assert not hits, f"{path.name} mentions {what}: {hits[:3]}"
    for hit in re.findall(PARENT_PATH, text):
        target = (path.parent / hit).resolve()
        assert target.is_relative_to(ROOT), f"{path.name}: {hit} leaves the repository"


def test_docs_links_point_at_files_that_exist():
    missing = []
    for path in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if not re.match(r"[a-z]+://|mailto:", target) and not (path.parent / target).exists():
                missing.append(f"{path.name}: {target}")
    assert not missing, missing


def test_forbidden_patterns_catch_what_they_name():
    samples = ["tar xzf ../shared/data/x.tgz", "see /work/main/x", "issue 15", "ADIOS.md §6"]
    for sample in samples:
        assert any(re.search(p, sample, flags=re.I) for p in FORBIDDEN.values()), sample
    assert not any(re.search(p, "mkdir -p /tmp/cifar10 && adios train", flags=re.I)
                   for p in FORBIDDEN.values())
    assert re.findall(PARENT_PATH, "see ../RESULTS.md or ../../x") == ["../RESULTS.md", "../../x"]
    assert not (ROOT / "docs" / "../../x").resolve().is_relative_to(ROOT)


def test_readme_own_images_commands_run_on_a_folder_of_images(tmp_path, capsys):
    """The README's own-data commands, word for word, on a generated folder (tiny settings)."""
    from PIL import Image

    from adios.cli import main

    section = ROOT.joinpath("README.md").read_text().split("## Your own images", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    commands = [line.split("#")[0].split() for line in block.splitlines() if line.strip()]
    assert [words[:2] for words in commands] == [["adios", "data"], ["adios", "train"]]
    folder = tmp_path / "my-images"
    folder.mkdir()
    for i in range(40):
        pixels = torch.randint(0, 256, (20, 24, 3), dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{i}.jpg")
    tiny = {"data": ["--no-progress", "data.workers=0"],
            "train": [f"run_dir={tmp_path / 'run'}", "model.width=4", "masker.fbase=8",
                      "objective.proj_hidden=16", "objective.proj_out=8", "optim.batch_size=16",
                      "train.epochs=1", "data.image_size=16", "train.progress=false",
                      "train.device=cpu", "data.workers=0"]}
    for words in commands:
        words = [w.replace("~/my-images", str(folder)) for w in words[1:]]
        assert main(words + tiny[words[0]]) == 0, words
    out = capsys.readouterr().out
    assert "unlabelled: 40" in out and "mean [" in out
    assert (tmp_path / "run" / "masks.png").is_file()
