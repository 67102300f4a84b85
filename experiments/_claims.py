"""What every reproduction writes, and what `experiments/reproduce.py` reads back.

A reproduction's full mode writes, into its `--out` folder (`experiments/results/` by default; with
`--smoke`, `results/smoke/<name>/` at the repository root, so that a smoke run never overwrites the full
results):

- `<name>.md`: the set-up, its tables, each paper's claim beside our number, and a verdict with why;
- `<name>.json`: the claims as data (the sidecar `reproduce.py` turns into one line per claim of
  `experiments/RESULTS.md`);
- its PNG figures, `<name>_*.png`.

Sidecar format (JSON):

    {"experiment": name, "mode": "full" | "smoke", "seconds": wall seconds of the run,
     "environment": {"hypergrad_commit", "hypergrad", "python", "jax", "jaxlib", "numpy", "optax", "flax",
                     "backend", "devices", "started_utc"} (what produced it: `environment`),
     "claims": [{"paper": ..., "claim": ..., "ours": ..., "verdict": "held" | "partly" | "not held",
                 "why": ...}, ...],
     "figures": [file names], "numbers": {any key numbers, for tests and readers}}

`reproduce.py` adds, after running the experiment, `"wall_seconds"` (the subprocess's wall seconds, what
RESULTS.md shows; without it RESULTS.md shows `"seconds"`) and `"reproduce_run"` (its start, UTC), or
`"reproduce_failed": {"run", "exit", "wall_seconds"}` when that run failed.

A long run keeps what it has measured so far in `<name>.partial.json` (`write_partial`, replaced whole
after each measured cell), so an interrupted run loses at most the cell it was in; `write` removes it.
The next run reads it back (`read_partial`): it resumes from those cells when it has the same sizes, and
otherwise moves the file aside (`set_aside`) before measuring anything. finetuning.py keeps its cells
itself; every other reproduction keeps its units through `_progress.Progress` (which says which resume).

Every file here is written whole or not at all (`write_atomically`): a run stopped or failing while
writing leaves the earlier file, never an empty or cut one.

Not an experiment (no `--smoke`): a module the experiments share, as benchmarks share `_common.py`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Any

VERDICTS = ("held", "partly", "not held")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
"""Where full modes write by default: experiments/results/."""
SMOKE_RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results", "smoke")
"""Where smoke modes write by default, one folder per experiment: results/smoke/ at the repository root
(git-ignored; `make smoke` writes there too), never `RESULTS`."""


def default_out(name: str, smoke: bool) -> str:
    """`--out` when none is given: `RESULTS`, or with `smoke` `SMOKE_RESULTS/<name>`."""
    return os.path.join(SMOKE_RESULTS, name) if smoke else RESULTS


def parser(doc: str) -> argparse.ArgumentParser:
    """The command line every reproduction starts from: `--smoke` and `--out`; the description is the
    first paragraph of `doc`. Add an experiment's own options to it, then `parse`."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, seconds (the numbers mean nothing); writes into results/smoke/<name>/ "
                             "unless --out is given")
    parser.add_argument("--out", help="the folder to write into, created if missing (default experiments/results; "
                                      "with --smoke results/smoke/<name>)")
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None, name: str,
          check=None) -> argparse.Namespace:
    """`parser`'s arguments, with `--out` resolved (`default_out`) and created. A parser error, before any
    work, for `--smoke` into `RESULTS` (it would overwrite the full results) and for an `--out` that is a
    file or cannot be created. `check(parser, args)`, if given, runs before the folder is made (an
    experiment's own checks, which call `parser.error`), so a refused command line creates nothing."""
    args = parser.parse_args(argv)
    if check is not None:
        check(parser, args)
    if args.out is None:
        args.out = default_out(name, args.smoke)
    elif args.smoke and os.path.realpath(args.out) == os.path.realpath(RESULTS):
        parser.error(f"--smoke --out {args.out}: a smoke run would overwrite the full results there; "
                     "leave --out out (it writes into results/smoke/) or give another folder")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        parser.error(f"--out {args.out}: is a file, not a folder; give a folder (it is created if missing)")
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as error:
        parser.error(f"--out {args.out}: cannot create the folder ({error.strerror}); give another folder")
    return args


def unwritable(path: str, folder: bool = True) -> str | None:
    """Why `path` cannot be written, before any work, or None when it can: for a folder (`folder=True`),
    one that is a file or cannot be created in its nearest existing parent; for a file, one that is a
    folder or whose folder is unwritable in that way. Creates nothing: it makes and removes an empty
    probe folder in the nearest existing parent (so read-only and virtual file systems are caught)."""
    path = os.path.abspath(path)
    if folder and os.path.exists(path) and not os.path.isdir(path):
        return "is a file, not a folder; give a folder (it is created if missing)"
    if not folder:
        if os.path.isdir(path):
            return "is a folder; give the path of a file"
        path = os.path.dirname(path)
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"{parent} is a file, not a folder; give another path"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".probe.", dir=parent))
    except OSError as error:
        return f"cannot write in {parent} ({error.strerror}); give another path"
    return None


def arguments(doc: str, argv: list[str] | None = None, name: str | None = None) -> argparse.Namespace:
    """Every reproduction's command line: `--smoke` (tiny sizes, seconds) and `--out` (`parser`, `parse`).
    `name` (for the smoke folder) defaults to the running script's name, `python experiments/<name>.py`."""
    return parse(parser(doc), argv, name or os.path.splitext(os.path.basename(sys.argv[0]))[0] or "experiment")


@dataclasses.dataclass(frozen=True)
class Claim:
    """One published claim and what we measured.

    Attributes:
        paper: short citation ("Franceschi et al. 2017").
        claim: the claim, in one sentence.
        ours: our number(s), in one line.
        verdict: "held", "partly" or "not held" (decided by a rule fixed in the experiment's code).
        why: one or two sentences: which numbers decided it, and the likely reason when it did not hold.
    """

    paper: str
    claim: str
    ours: str
    verdict: str
    why: str

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict={self.verdict!r} must be one of {VERDICTS}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / jax scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def markdown_cell(value: Any) -> str:
    """`str(value)` fit for one table cell: each `|` not already escaped becomes `\\|` (a bare pipe would
    end the cell and split the row)."""
    return re.sub(r"(?<!\\)\|", r"\\|", str(value))


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub markdown table; every header and cell goes through `markdown_cell`."""
    lines = ["| " + " | ".join(markdown_cell(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(markdown_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def claims_markdown(claims: list[Claim]) -> str:
    """The section every results page ends with: each claim, our number, the verdict and why."""
    parts = ["## Claims and verdicts", ""]
    for c in claims:
        parts += [f"- **{c.paper}**: {c.claim}", f"  - ours: {c.ours}", f"  - verdict: **{c.verdict}**. {c.why}"]
    return "\n".join(parts) + "\n"


def _umask() -> int:
    """The process's file-creation mask (read by setting it, then setting it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomically(path: str, text: str) -> str:
    """Writes `text` to `path` whole or not at all: into a new file beside it (the same folder), then one
    `os.replace` over `path` (atomic on POSIX and Windows). A reader, or a run stopped or failing part-way,
    sees the earlier file (or none), never half of one; a kill can leave a `.<name>.*.tmp` file beside
    it, which nothing reads. Permissions are those `open(path, "w")` would give. Cost: the text is written
    once; the folder needs room for both versions meanwhile. Returns `path`."""
    folder, base = os.path.split(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "w") as f:
            f.write(text)
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def set_aside(path: str) -> str:
    """Renames `path` to the first free name of `<stem>.previous<ext>`, `<stem>.previous-2<ext>`, ... beside
    it (`finetuning.partial.json` -> `finetuning.partial.previous.json`), so an earlier one set aside is
    never replaced; returns the new path."""
    stem, ext = os.path.splitext(path)
    number, aside = 1, f"{stem}.previous{ext}"
    while os.path.exists(aside):
        number += 1
        aside = f"{stem}.previous-{number}{ext}"
    os.replace(path, aside)
    return aside


def _git_commit(folder: str) -> str:
    """The git commit checked out at `folder` (`+dirty` when hypergrad/ or experiments/ differ from it, the
    results experiments write under experiments/results/ left out), or "unknown" (no git, not a checkout)."""
    try:
        run = dict(cwd=folder, capture_output=True, text=True, timeout=10)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], **run)
        if commit.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "-uno", "--", ":/hypergrad", ":/experiments",
                                ":(top,exclude)experiments/results"],  # the run's own outputs are not its code
                               **run).stdout.strip()
        return commit.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment(seconds: float = 0.0) -> dict[str, str]:
    """What produced a run, for its sidecar and page: hypergrad's git commit (`_git_commit` of the
    imported package's folder, "unknown" outside a checkout) and version; the Python, jax, jaxlib, numpy,
    optax and flax versions; JAX's backend and device kind and count; and the run's UTC start (now less
    `seconds`). Imports jax (every experiment already has)."""
    import importlib.metadata
    import platform

    import jax

    import hypergrad

    def version(package: str) -> str:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return "unknown"

    devices = jax.devices()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - seconds))
    return {"hypergrad_commit": _git_commit(os.path.dirname(os.path.abspath(hypergrad.__file__))),
            "hypergrad": getattr(hypergrad, "__version__", "unknown"), "python": platform.python_version(),
            **{package: version(package) for package in ("jax", "jaxlib", "numpy", "optax", "flax")},
            "backend": jax.default_backend(), "devices": f"{len(devices)} x {devices[0].device_kind}",
            "started_utc": started}


def environment_line(env: dict[str, str]) -> str:
    """`environment`'s record as one sentence for a page ('' for none: a sidecar written before it); the
    start only where the record has one (`reproduce.environments` leaves it out, its header has the run's)."""
    if not env:
        return ""
    return (f"hypergrad {env.get('hypergrad_commit', 'unknown')} ({env.get('hypergrad', 'unknown')}); Python "
            f"{env.get('python')}, jax {env.get('jax')}, jaxlib {env.get('jaxlib')}, numpy {env.get('numpy')}, "
            f"optax {env.get('optax')}, flax {env.get('flax')}; backend {env.get('backend')} "
            f"({env.get('devices')})" + (f"; started {env['started_utc']}" if "started_utc" in env else ""))


def write(out: str, name: str, body: str, claims: list[Claim], *, seconds: float, smoke: bool,
          figures: list[str] = (), numbers: dict[str, Any] | None = None) -> tuple[str, str]:
    """Writes `<out>/<name>.md` (body, then the claims section) and `<out>/<name>.json`; returns the paths.
    Both texts are made in full before either file is replaced (`write_atomically`), so a failure (a value
    JSON cannot hold) leaves the earlier page and sidecar as they were."""
    os.makedirs(out, exist_ok=True)
    md_path, json_path = os.path.join(out, f"{name}.md"), os.path.join(out, f"{name}.json")
    mode = "smoke (tiny sizes: numbers mean nothing)" if smoke else "full"
    env = environment(seconds)
    page = (f"{body.rstrip()}\n\n{claims_markdown(claims)}\nMode: {mode}; wall time {seconds:.0f} s.\n\n"
            f"Produced by: {environment_line(env)}.\n")
    sidecar = {"experiment": name, "mode": "smoke" if smoke else "full", "seconds": seconds, "environment": env,
               "claims": [dataclasses.asdict(c) for c in claims],
               "figures": [os.path.basename(p) for p in figures], "numbers": numbers or {}}
    text = json.dumps(_jsonable(sidecar), indent=1)
    write_atomically(md_path, page)
    write_atomically(json_path, text)
    if os.path.exists(partial_path(out, name)):
        os.remove(partial_path(out, name))  # the whole run is written: its partial record is replaced
    return md_path, json_path


def partial_path(out: str, name: str) -> str:
    """`<out>/<name>.partial.json`, where `write_partial` keeps a long run's measurements so far."""
    return os.path.join(out, f"{name}.partial.json")


def write_partial(out: str, name: str, numbers: dict[str, Any], *, seconds: float, smoke: bool) -> str:
    """Writes what a run has measured so far (`numbers`, e.g. its finished cells) to `partial_path`, so an
    interrupted run keeps them; call it after each measured cell. The file is replaced whole
    (`write_atomically`), so it is never half written; `write` removes it at the end, and the next run
    reads it back with `read_partial`. Costs one JSON dump of `numbers` per call. Returns the path.

    Format: {"experiment": name, "mode": "full" | "smoke", "partial": true, "seconds": seconds so far,
    "numbers": numbers}."""
    os.makedirs(out, exist_ok=True)
    record = {"experiment": name, "mode": "smoke" if smoke else "full", "partial": True, "seconds": seconds,
              "numbers": numbers}
    return write_atomically(partial_path(out, name), json.dumps(_jsonable(record), indent=1))


def read_partial(out: str, name: str) -> dict[str, Any] | None:
    """The record `write_partial` left in `partial_path` (an interrupted run's), or None when there is
    none. Raises ValueError (or OSError) for a file that is not such a record; the caller sets it aside."""
    path = partial_path(out, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        record = json.load(f)
    if not (isinstance(record, dict) and record.get("partial") is True and isinstance(record.get("numbers"), dict)):
        raise ValueError(f"{path} is not a partial record of {name}")
    return record


def publish(args, name: str, body: str, claims: list[Claim], *, began: float, figures: list[str] = (),
            numbers: dict[str, Any] | None = None) -> float:
    """`write` the page and sidecar into `args.out`, then print the page, the claims and the wall
    seconds since `began` (a `time.perf_counter()` reading); returns those seconds."""
    seconds = time.perf_counter() - began
    write(args.out, name, body, claims, seconds=seconds, smoke=args.smoke, figures=figures, numbers=numbers)
    print(body)
    print(claims_markdown(claims))
    print(f"total {seconds:.0f} s")
    return seconds


def read(out: str, name: str) -> dict[str, Any]:
    """The sidecar `<out>/<name>.json`, checked: every claim has the five fields and a known verdict."""
    with open(os.path.join(out, f"{name}.json")) as f:
        sidecar = json.load(f)
    for claim in sidecar["claims"]:
        Claim(**claim)  # raises on a missing field or an unknown verdict
    return sidecar
