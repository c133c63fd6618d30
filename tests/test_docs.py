"""The words around the code are checked like code: every command a page tells a user to type, every link.

Pages: README.md, BENCHMARKS.md and every docs/*.md (a page added later is checked without changing this
file). For each ```bash (or sh, shell) block:
- `dvc exp run -S key=value`: the key is in params.yaml and the value is valid for pipeline/params.py;
- `python -m MODULE ...`: the module exists and accepts every option given (from its own `--help`);
- `make TARGET`: the Makefile has the target; `dvc repro/commit/status STAGE`: dvc.yaml has the stage;
- any other word that names a path in one of the repository's tracked folders: the path exists (or git
  ignores it: a file the user makes, such as .dvc/config.local).
BENCHMARKS.md's inline `bench.NAME --option` commands are checked like `python -m`, and its summary table
against bench/run_all.sh and bench/results/. Then the pages' relative links and `#anchors` (GitHub's heading
slugs), the README's Layout section, the recipes of docs/recipes.yaml, params.yaml's comments against
pipeline/params.py, and what the `dvc exp run` lines of each page do when a user runs them one after the
other (through a model of DVC's workspace that one test checks against real DVC).

Cost: ~5 s, plus ~12 s of CPU (~60 s wall on a loaded machine) for the real-DVC check.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shlex
import sys
import time
import unicodedata
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from pipeline import cpu
from pipeline.params import BACKBONES, SECTIONS, Section, TrainParams, choices, parse_section
from tests.harness import ENV, PROJECT_ROOT, git_commit, run

SHIPPED = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
RECIPES: dict[str, dict] = yaml.safe_load((PROJECT_ROOT / "docs" / "recipes.yaml").read_text())

# Pages and modules that another branch adds: a link to one is accepted while it does not exist yet, and
# checked like any other once it does. Remove an entry when its branch is merged.
PENDING = {}

PAGES = sorted(
    path.relative_to(PROJECT_ROOT).as_posix()
    for path in [PROJECT_ROOT / "README.md", PROJECT_ROOT / "BENCHMARKS.md", *(PROJECT_ROOT / "docs").glob("*.md")]
)


# ----------------------------------------------------------------------------- reading the pages


def page_text(page: str) -> str:
    return (PROJECT_ROOT / page).read_text(encoding="utf-8")


def bash_blocks(page: str) -> list[str]:
    return re.findall(r"^```(?:bash|sh|shell)\n(.*?)^```", page_text(page), flags=re.S | re.M)


def block_commands(block: str) -> list[list[str]]:
    """The simple commands of a bash block: continuation lines joined, comments dropped, split at && ; |."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        current: list[str] = []
        for token in lexer:
            if token in ("&&", "||", ";", "|", "&"):
                commands.append(current)
                current = []
            else:
                current.append(token)
        commands.append(current)
    return [command for command in commands if command]


def page_commands(page: str) -> list[list[str]]:
    return [command for block in bash_blocks(page) for command in block_commands(block)]


ALL_COMMANDS = [(page, command) for page in PAGES for command in page_commands(page)]


def command_id(item: tuple[str, list[str]]) -> str:
    page, command = item
    return f"{page}: {' '.join(command)}"[:90]


def is_exp_run(command: list[str]) -> bool:
    return command[:3] == ["dvc", "exp", "run"]


# ----------------------------------------------------------------------------- params as `-S` sets them


def split_top_level(value: str) -> list[str]:
    """`a,b` -> [a, b] (Hydra's sweep syntax), but `[1,2]` and `{a: 1, b: 2}` stay whole."""
    parts, depth, current = [], 0, ""
    for char in value:
        depth += char in "[{("
        depth -= char in "]})"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def overrides(command: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for flag, value in zip(command, command[1:], strict=False):
        if flag in ("-S", "--set-param"):
            key, _, text = value.partition("=")
            pairs.append((key, text))
    return pairs


def apply_override(document: dict[str, Any], key: str, text: str) -> None:
    """What `dvc exp run -S key=value` does to params.yaml: `++key` adds or sets, `+key` adds, `key` sets."""
    adds = key.startswith("+")
    *parents, last = key.lstrip("+").split(".")
    section = document
    for name in parents:
        section = section[name]
    if not adds and last not in section:
        raise KeyError(f"-S {key}: not in params.yaml (dvc exp run refuses it too)")
    section[last] = yaml.safe_load(text)


def params_after(command: list[str], base: dict[str, Any]) -> list[dict[str, Any]]:
    """params.yaml after this command's overrides; one document per point of a sweep (`-S 'k=1,2'`)."""
    documents = [copy.deepcopy(base)]
    for key, text in overrides(command):
        if re.match(r"^(range|choice|glob|interval)\(", text):
            pytest.skip(f"{key}={text}: a Hydra sweep function, not expanded here")
        values = split_top_level(text)
        documents = [copy.deepcopy(document) for document in documents for _ in values]
        for index, document in enumerate(documents):
            apply_override(document, key, values[index % len(values)])
    return documents


def check_sections(document: dict[str, Any]) -> None:
    for section in SECTIONS:
        parse_section(section, document[section.SECTION])


# ----------------------------------------------------------------------------- the commands


def test_pages_have_commands() -> None:
    """The checker finds what it checks (a parser that found nothing would pass every test below)."""
    commands = [command for _, command in ALL_COMMANDS]
    assert ["make", "run"] in commands and ["make", "test"] in commands
    assert sum(is_exp_run(command) for command in commands) >= 15
    assert any(command[:3] == ["python", "-m", "stages.predict"] for command in commands)


@pytest.mark.parametrize("item", [item for item in ALL_COMMANDS if is_exp_run(item[1])], ids=command_id)
def test_exp_run_sets_valid_params(item: tuple[str, list[str]]) -> None:
    for document in params_after(item[1], SHIPPED):
        check_sections(document)


@functools.cache
def module_options(module: str) -> set[str]:
    """The options a `python -m MODULE` accepts, read from its own --help."""
    result = run([sys.executable, "-m", module, "--help"], PROJECT_ROOT, timeout=60)
    return set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", result.stdout))


def python_module_calls(command: list[str]) -> list[tuple[str, list[str]]]:
    """(module, its arguments) for every `python -m MODULE ...` in the command (also after srun, .venv/bin/)."""
    calls = []
    for index, word in enumerate(command[:-2]):
        if re.fullmatch(r"(.*/)?python3?", word) and command[index + 1] == "-m":
            calls.append((command[index + 2], command[index + 3 :]))
    return calls


def benchmark_calls() -> list[tuple[str, list[str]]]:
    """BENCHMARKS.md's commands, written inline as `bench.NAME --option ...` (run with .venv/bin/python -m)."""
    spans = re.findall(r"`(bench\.\w+(?: [^`]*)?)`", page_text("BENCHMARKS.md").replace("\n", " "))
    return [(words[0], words[1:]) for words in map(shlex.split, spans)]


PYTHON_CALLS = [
    (page, module, arguments) for page, command in ALL_COMMANDS for module, arguments in python_module_calls(command)
] + [("BENCHMARKS.md", module, arguments) for module, arguments in benchmark_calls()]


@pytest.mark.parametrize(
    "page,module,arguments", PYTHON_CALLS, ids=[f"{p}: {m} {' '.join(a)}"[:90] for p, m, a in PYTHON_CALLS]
)
def test_python_module_accepts_the_options(page: str, module: str, arguments: list[str]) -> None:
    if not module.startswith(("stages.", "bench.", "pipeline.")):
        return  # another project's module (pytest, dvc): not ours to check
    assert (PROJECT_ROOT / (module.replace(".", "/") + ".py")).is_file(), f"{page}: no module {module}"
    options = {word.split("=", 1)[0] for word in arguments if word.startswith("-")}
    unknown = options - module_options(module)
    assert not unknown, f"{page}: python -m {module} has no option {sorted(unknown)}"


def make_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (PROJECT_ROOT / "Makefile").read_text(), flags=re.M))


def dvc_stages() -> set[str]:
    return set(yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"])


@functools.cache
def tracked_top_level() -> set[str]:
    listed = run(["git", "ls-files"], PROJECT_ROOT).stdout.split()
    return {name.split("/", 1)[0] for name in listed}


def is_ignored(path: str) -> bool:
    return run(["git", "check-ignore", "-q", path], PROJECT_ROOT, check=False).returncode == 0


def repo_paths(command: list[str]) -> list[str]:
    """Words naming a path in a tracked folder or file of this repository, e.g. .ci/run, bench/run_all.sh."""
    paths = []
    for argument in command:
        word = argument.split("=", 1)[1] if re.match(r"^[\w.+-]+=", argument) else argument
        if word.startswith(("-", "/", "~", "$")) or ":" in word:
            continue
        if word.startswith(("data/own/", "data/backbone/")) and not word.endswith("/README.md"):
            continue  # the user's own data and weights: their names are examples (docs/own-data.md, backbones.md)
        first = word.split("/", 1)[0]
        if first in tracked_top_level() and first not in ("", ".", ".."):
            paths.append(word)
    return paths


@pytest.mark.parametrize("item", ALL_COMMANDS, ids=command_id)
def test_command_names_what_exists(item: tuple[str, list[str]]) -> None:
    page, command = item
    if command[0] == "make":
        assert set(command[1:]) <= make_targets(), f"{page}: `{' '.join(command)}`: no such make target"
    if command[:2] in (["dvc", "repro"], ["dvc", "commit"], ["dvc", "status"]):
        named = [word for word in command[2:] if not word.startswith("-")]
        assert set(named) <= dvc_stages(), f"{page}: `{' '.join(command)}`: dvc.yaml has no such stage"
    for path in repo_paths(command):
        if path in PENDING:
            continue
        exists = any(PROJECT_ROOT.glob(path)) if "*" in path else (PROJECT_ROOT / path).exists()
        assert exists or is_ignored(path), f"{page}: `{' '.join(command)}` names {path}, which does not exist"


def summary_rows() -> list[list[str]]:
    table = re.search(r"^## Summary\n(.*?)^## ", page_text("BENCHMARKS.md"), flags=re.S | re.M).group(1)
    rows = [line.strip().strip("|").split("|") for line in table.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row] for row in rows[2:]]  # below the header and its --- line


def test_benchmark_rows_name_their_results_and_run_all_runs_them() -> None:
    """Each measured row names its results file and a command that bench/run_all.sh runs; no orphan results."""
    run_all = (PROJECT_ROOT / "bench" / "run_all.sh").read_text()
    named_files = set()
    for number, _goal, _target, result, _verdict, command, results in summary_rows():
        if "pending" in result:
            continue
        files = re.findall(r"`([\w.-]+\.json)`", results)
        assert files, f"BENCHMARKS.md row {number} names no results file"
        named_files.update(files)
        for module in re.findall(r"`(bench\.\w+)", command):
            assert f"-m {module} " in run_all, f"bench/run_all.sh does not run {module} (row {number})"
    on_disk = {path.name for path in (PROJECT_ROOT / "bench" / "results").glob("*.json")}
    assert named_files <= on_disk, f"BENCHMARKS.md names results that do not exist: {sorted(named_files - on_disk)}"
    assert on_disk <= named_files, f"results no row of BENCHMARKS.md names: {sorted(on_disk - named_files)}"


# ----------------------------------------------------------------------------- links and anchors


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lowercased, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "").strip().lower()
    kept = "".join(char for char in text if char in " -_" or unicodedata.category(char)[0] in "LN")
    return kept.replace(" ", "-")


def without_fences(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def without_code(text: str) -> str:
    return re.sub(r"`[^`\n]*`", "", without_fences(text))


def anchors(page: str) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", without_fences(page_text(page)), flags=re.M):
        slug = github_slug(heading)
        result.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return result


LINKS = [
    (page, target)
    for page in PAGES
    for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", without_code(page_text(page)))
    if not re.match(r"^[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto: are not ours to check
]


def test_github_slug_rules() -> None:
    assert github_slug("1. Training speed (`bench/train_speed.py`)") == "1-training-speed-benchtrain_speedpy"
    assert github_slug("What changes numerically") == "what-changes-numerically"
    assert github_slug("Remotes and CI: GitHub Actions") == "remotes-and-ci-github-actions"


@pytest.mark.parametrize("page,target", LINKS, ids=[f"{p} -> {t}" for p, t in LINKS])
def test_link_resolves(page: str, target: str) -> None:
    path_part, _, anchor = target.partition("#")
    resolved = (PROJECT_ROOT / page).parent / path_part if path_part else PROJECT_ROOT / page
    relative = Path(resolved).resolve().relative_to(PROJECT_ROOT).as_posix()
    if relative in PENDING and not resolved.exists():
        return
    assert resolved.exists(), f"{page}: link to {target}, but {relative} does not exist"
    if anchor:
        assert relative.endswith(".md"), f"{page}: anchor #{anchor} into {relative}, which is not a Markdown page"
        assert anchor in anchors(relative), f"{page}: {relative} has no heading with anchor #{anchor}"


def test_readme_stays_short() -> None:
    """A newcomer reads it in five minutes; the details belong in docs/."""
    assert len(page_text("README.md").splitlines()) <= 160


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {target.split("#")[0] for page, target in LINKS if page == "README.md"}
    pages = {f"docs/{path.name}" for path in (PROJECT_ROOT / "docs").glob("*.md")}
    assert pages <= linked, f"README.md does not link {sorted(pages - linked)}"


def test_readme_layout_names_every_folder_and_module() -> None:
    layout = re.search(r"^## Layout\n+```\n(.*?)^```", page_text("README.md"), flags=re.S | re.M).group(1)
    named = set(re.findall(r"[\w./-]+", layout))
    folders = {name for name in tracked_top_level() if (PROJECT_ROOT / name).is_dir()}
    missing = {folder for folder in folders if not ({folder, f"{folder}/"} & named or f"{folder}/" in layout)}
    assert not missing, f"README's Layout section does not name {sorted(missing)}"
    modules = {path.name for path in (PROJECT_ROOT / "pipeline").glob("*.py")} - {"__init__.py"}
    assert modules <= named, f"README's Layout section does not name pipeline/{sorted(modules - named)}"
    listed = {name for name in named if name.endswith(".py") and "/" not in name}  # the modules under pipeline/
    ghosts = {name for name in listed if not (PROJECT_ROOT / "pipeline" / name).exists()}
    assert ghosts <= {Path(p).name for p in PENDING}, f"README's Layout names modules that do not exist: {ghosts}"


# ----------------------------------------------------------------------------- recipes


def recipe_command(name: str) -> list[str]:
    return ["dvc", "exp", "run", *(word for item in RECIPES[name]["set"] for word in ("-S", item))]


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_is_shown_after_a_reset(name: str) -> None:
    """docs/performance.md shows each recipe exactly as docs/recipes.yaml (and bench/accuracy.py) has it."""
    commands = page_commands("docs/performance.md")
    assert recipe_command(name) in commands, f"docs/performance.md does not show recipe {name} as recipes.yaml has it"
    before = commands[commands.index(recipe_command(name)) - 1]
    assert before == ["git", "checkout", "params.yaml"], f"recipe {name} is not preceded by git checkout params.yaml"


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_builds_what_it_names_and_avoids_slow_settings(name: str) -> None:
    (document,) = params_after(recipe_command(name), SHIPPED)
    train = parse_section(TrainParams, document["train"])
    assert train.model == RECIPES[name]["builds"]
    assert cpu.speed_warnings(train) == []


# ----------------------------------------------------------------------------- params.yaml's comments


def commented_keys() -> list[tuple[str, str]]:
    """(dotted key, the comment lines right above it) for every key of params.yaml below a section.

    Keys on consecutive lines share one comment (conv_dropout, dense_dropout).
    """
    result, comment, stack, shared = [], [], [], ""
    for line in (PROJECT_ROOT / "params.yaml").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("# "))
            continue
        match = re.match(r"^( *)(\w+):", line)
        if not match:
            comment, shared = [], ""
            continue
        depth = len(match.group(1)) // 2
        stack = [*stack[:depth], match.group(2)]
        shared = " ".join(comment) or shared
        if depth > 0:
            result.append((".".join(stack), shared))
        comment = []
    return result


def rule_for(dotted: str) -> Any:
    """The type params.py checks the key by (pydantic's annotation of its field)."""
    section_name, *middle, key = dotted.split(".")
    section = {cls.SECTION: cls for cls in SECTIONS}[section_name]
    for name in middle:
        section = section.model_fields[name].annotation
    return section.model_fields[key].annotation


def listed_values(comment: str) -> set[str] | None:
    """The values a comment lists as `a | b | c`, or None."""
    match = re.search(r"(?<!\w)\w+(?: \|\s+\w+)+", comment)
    return set(re.split(r" \|\s+", match.group(0))) if match else None


COMMENTED = commented_keys()


def test_params_comments_cover_every_key() -> None:
    assert len(COMMENTED) >= 35
    uncommented = [key for key, comment in COMMENTED if not comment and not is_section(rule_for(key))]
    assert not uncommented, f"params.yaml: no comment above {uncommented}"


def is_section(rule: Any) -> bool:
    return isinstance(rule, type) and issubclass(rule, Section)


@pytest.mark.parametrize("key,comment", COMMENTED, ids=[key for key, _ in COMMENTED])
def test_params_comment_lists_exactly_the_allowed_values(key: str, comment: str) -> None:
    rule = rule_for(key)
    if is_section(rule):
        return  # train.mlp, train.cnn: their keys carry the comments
    listed = listed_values(comment)
    names = choices(rule) or None
    if names is not None:
        unnamed = set(names) - set(re.findall(r"\w+", comment))
        assert not unnamed, f"params.yaml: the comment of {key} does not name {sorted(unnamed)}, which params.py allows"
        if listed is not None:  # `a | b | c`: exactly the allowed values, none that params.py refuses
            assert listed == set(names), f"params.yaml: the comment of {key} lists {listed}, params.py allows {names}"
    elif listed is not None:
        assert listed == {"true", "false"}, f"params.yaml: the comment of {key} lists {listed}"
        assert rule is bool


def test_every_choice_rule_exposes_its_names() -> None:
    assert choices(Literal["a", "b"]) == ("a", "b")
    assert choices(tuple[Literal["a", "b"], ...]) == ("a", "b")  # a list of names, as export.formats
    assert choices(TrainParams.model_fields["model"].annotation) == ("mlp", "cnn", "fast_cnn", *BACKBONES)
    assert choices(int) == ()


# ----------------------------------------------------------------------------- recipes in sequence

# `dvc exp run` leaves the experiment's params in the workspace, and the next one starts from there. Each
# page's commands are played in order through a model of that (simulate_workspace), which is itself checked
# against real DVC (test_workspace_model_is_what_dvc_does). Training is not run: what a recipe builds is a
# function of the params it trains with (pipeline/models.py), so "each builds the architecture it names"
# holds when each command runs with exactly the committed params plus its own `-S` values.


def simulate_workspace(commands: list[list[str]], head: dict[str, Any]) -> list[tuple[list[str], dict[str, Any]]]:
    """(command, the params it runs with) for each `dvc exp run`, as DVC 3.67 does it in one workspace.

    - `dvc exp run -S ...` runs with the workspace's params.yaml plus its overrides, and leaves them there;
    - `--temp` and `--queue` snapshot the workspace the same way but leave it as it was;
    - `git checkout params.yaml` (or `git checkout .`, `git checkout -- params.yaml`) restores the commit's.
    """
    workspace = copy.deepcopy(head)
    runs = []
    for command in commands:
        if command[:2] == ["git", "checkout"] and {"params.yaml", "."} & set(command[2:]):
            workspace = copy.deepcopy(head)
        elif is_exp_run(command):
            if any(len(split_top_level(text)) > 1 for _, text in overrides(command)):
                continue  # a sweep: each point is checked by test_exp_run_sets_valid_params
            (effective,) = params_after(command, workspace)
            runs.append((command, effective))
            if not {"--temp", "--queue"} & set(command):
                workspace = effective
    return runs


SEQUENCE_PAGES = [page for page in PAGES if any(is_exp_run(command) for command in page_commands(page))]


@pytest.mark.parametrize("page", SEQUENCE_PAGES)
def test_exp_runs_in_sequence_each_do_what_they_say(page: str) -> None:
    """Run one after the other, as a user copies them, each `dvc exp run` changes exactly what it sets."""
    for command, effective in simulate_workspace(page_commands(page), SHIPPED):
        (wanted,) = params_after(command, SHIPPED)
        assert effective == wanted, (
            f"{page}: `{' '.join(command)}` runs with params it does not set, left by an earlier line: "
            f"{diff(wanted, effective)}; make it set them, or reset first with `git checkout params.yaml`"
        )


@pytest.mark.parametrize("page", SEQUENCE_PAGES)
def test_experiment_names_are_unique_on_a_page(page: str) -> None:
    """DVC refuses a second experiment of the same name: a page followed top to bottom must not need -f."""
    runs = [command for command in page_commands(page) if is_exp_run(command) and "-n" in command]
    names = [command[command.index("-n") + 1] for command in runs]
    assert len(names) == len(set(names)), f"{page}: experiment names used twice: {names}"


TOY_STAGE = """\
stages:
  record:
    cmd: python -c "import json, os, yaml; open(os.environ['DOCS_PARAMS_LOG'], 'a').write(json.dumps(yaml.safe_load(open('params.yaml'))) + chr(10))"
    always_changed: true
"""  # noqa: E501


@pytest.mark.slow
def test_workspace_model_is_what_dvc_does(tmp_path: Path) -> None:
    """Real `dvc exp run` in a git + DVC repository with this project's params.yaml and a stage that records
    the params.yaml it ran with: the same params, run for run, as simulate_workspace says."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text((PROJECT_ROOT / "params.yaml").read_text())
    (repo / "dvc.yaml").write_text(TOY_STAGE)
    run(["git", "init", "-q", "-b", "main"], repo)
    run(["dvc", "init", "-q"], repo)
    git_commit(repo, "toy")
    sequence = [
        ["dvc", "exp", "run", "-S", "train.model=cnn"],
        ["dvc", "exp", "run", "-S", "train.epochs=3"],  # carries train.model=cnn
        ["dvc", "exp", "run", "--temp", "-S", "train.epochs=4"],  # carries it too, and leaves the workspace
        ["dvc", "exp", "run", "--queue", "-S", "train.epochs=5"],
        ["dvc", "exp", "run", "-S", "train.mlp.dropout=0.2"],
        ["git", "checkout", "params.yaml"],
        ["dvc", "exp", "run", "-S", "train.mlp.hidden_units=[64]"],
    ]
    log = tmp_path / "params.jsonl"
    env = ENV | {"DOCS_PARAMS_LOG": str(log)}
    for command in sequence:
        run(command, repo, env=env)
    run(["dvc", "queue", "start"], repo, env=env)
    deadline = time.monotonic() + 180
    while len(log.read_text().splitlines()) < 6 and time.monotonic() < deadline:
        time.sleep(1)
    run(["dvc", "queue", "stop", "--kill"], repo, env=env, check=False)
    seen = sorted(log.read_text().splitlines())
    simulated = sorted(json.dumps(params) for _, params in simulate_workspace(sequence, SHIPPED))
    assert [json.loads(line) for line in seen] == [json.loads(line) for line in simulated]


def diff(wanted: dict, got: dict, prefix: str = "") -> list[str]:
    changes = []
    for key in sorted(set(wanted) | set(got)):
        a, b = wanted.get(key), got.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += diff(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append(f"{prefix}{key}: {b!r} instead of {a!r}")
    return changes
