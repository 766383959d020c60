"""`lift report RUN_URL`: one self-contained HTML page per run, rebuilt from the run's stored outputs only.

    lift report ./runs/default              # -> ./runs/default/report/index.html
    lift report s3://bucket/runs/first      # written through lift.storage, like every other output

RUN_URL/report/index.html has inline CSS and a few lines of inline script (it marks any image that fails to
load); its PNGs lie beside it and are referenced relatively, so the folder can be copied or served as it is.
Sections, and what each reads (a section whose input is missing says so on the page instead of failing):

| section | reads |
|---|---|
| Summary | eval/results.json, critic/eval/accuracy.json, every stage's _SUCCESS |
| Critic accuracy | critic/eval/accuracy.json, next to LiFT's Table 2 (`critic_eval.PAPER`) |
| Critic reward | eval/results.json: reward histograms of base and aligned, means with 95% CIs, win rate |
| Labels per dimension | eval/results.json: the critic's label distribution per dimension and model |
| Oracle | eval/results.json: toy-world oracle checks per model, oracle score vs critic reward per video |
| Rounds | eval/results.json and rounds/K/eval/results.json: reward and oracle score per round (only with rounds) |
| Training curves | critic/tensorboard, align/tensorboard (TensorBoard event files) |
| Samples | eval/videos: frames of base and aligned videos of the same prompt and seed |
| Configuration | RUN_URL/config.yaml, or each stage's config.yaml |
"""

from __future__ import annotations

import html
import io
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

from lift.core import logs
from lift.data import hra
from lift.io import storage, video
from lift.stages import ROUNDS, STAGES, critic_eval, round_folder

log = logging.getLogger(__name__)
REPORT = "report"
INDEX = "index.html"
COLOURS = {"base": "#8a94a6", "aligned": "#e0702b"}
LABEL_COLOURS = {"Good": "#3b9a5a", "Normal": "#e5b53a", "Bad": "#c9483c"}
SECTION_IDS = ("summary", "critic-accuracy", "rewards", "labels", "oracle", "training", "samples", "config")
"""The page's sections, in order (each a <section id=...> with an <h2>); ROUNDS_SECTION follows "oracle" in a run of
more than one round."""
ROUNDS_SECTION = "rounds"
STAGE_FOLDERS = [(s.name, s.output) for s in STAGES.values()]
"""(stage, output folder under RUN_URL), in pipeline order."""
TRAINING = [(s.name, f"{s.output}/tensorboard") for s in STAGES.values() if s.trained and s.cluster]
CURVES = ("loss", "lr")
"""Scalars plotted first; other scalars whose name mentions loss or reward follow, up to MAX_CURVES."""
MAX_CURVES = 4
MAX_SAMPLES = 8
"""Prompt-seed pairs shown as frames (one per prompt first, then more seeds)."""
SAMPLE_FRAMES = 5
SAMPLE_HEIGHT = 72
"""Frames are enlarged (nearest neighbour) to about this many pixels high, so 32 px toy clips stay visible."""


@dataclass
class Section:
    id: str
    title: str
    body: list[str] = field(default_factory=list)
    filled: bool = True  # False when an input was missing


@dataclass
class _Report:
    run: str
    out: str
    images: list[str] = field(default_factory=list)

    def png(self, name: str, data: bytes) -> str:
        storage.write_bytes(storage.join(self.out, name), data)
        self.images.append(name)
        return name


def _esc(x) -> str:
    return html.escape(str(x), quote=True)


def _read_json(url: str):
    return storage.read_json(url) if storage.exists(url) else None


def _missing(what: str, url: str, hint: str) -> str:
    return (f'<p class="missing"><b>Not available:</b> {_esc(what)} (<code>{_esc(url)}</code> does not exist). '
            f"{_esc(hint)}</p>")


def _num(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _ci(stat: dict | None, digits: int = 3, percent: bool = False) -> str:
    """'0.428 [0.387, 0.468]' from a mean_ci dict; the interval is left out where there is none."""
    if not stat or stat.get("mean") is None:
        return "–"
    k = 100.0 if percent else 1.0
    fmt = (lambda v: f"{k * v:.{digits}f}{'%' if percent else ''}")
    if stat.get("low") is None:
        return f"{fmt(stat['mean'])} <span class=\"dim\">(n={stat.get('n', 0)}, no interval)</span>"
    return f"{fmt(stat['mean'])} <span class=\"dim\">[{fmt(stat['low'])}, {fmt(stat['high'])}]</span>"


def _gain_verdict(stat: dict | None) -> str:
    if not stat or stat.get("low") is None:
        return '<span class="dim">too few pairs for an interval</span>'
    if stat["low"] > 0:
        return '<span class="good">gain larger than its 95% interval</span>'
    if stat["high"] < 0:
        return '<span class="bad">loss larger than its 95% interval</span>'
    return '<span class="dim">within noise (the interval contains 0)</span>'


def _table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _img(src: str, alt: str, cls: str = "plot") -> str:
    return f'<img class="{cls}" src="{_esc(src)}" alt="{_esc(alt)}">'


# ------------------------------------------------------------------------------------------------------- plots


def _figure(width: float, height: float):
    from matplotlib.figure import (
        Figure,  # no pyplot: no global state, and the Agg canvas needs no display
    )

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    return fig


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _style(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", alpha=0.3)


def _reward_histogram(results: dict) -> bytes:
    fig = _figure(7.5, 3.2)
    ax = fig.add_subplot()
    bins = np.linspace(0.0, 1.0, 31)
    for model in ("base", "aligned"):
        rewards = [v["reward"] for v in results["videos"] if v["model"] == model and v.get("reward") is not None]
        stat = results["models"][model]["reward"]
        ax.hist(rewards, bins=bins, alpha=0.55, color=COLOURS[model], label=f"{model} (mean {_num(stat['mean'])})",
                edgecolor="white", linewidth=0.5)
        if stat["mean"] is not None:
            ax.axvline(stat["mean"], color=COLOURS[model], linewidth=2)
    scores = results.get("label_scores", {})
    for label, s in scores.items():
        ax.axvline(s, color=LABEL_COLOURS.get(label, "k"), linestyle=":", linewidth=1)
        ax.text(s, 1.0, f" {label}", transform=ax.get_xaxis_transform(), color=LABEL_COLOURS.get(label, "k"),
                fontsize=8, va="top")
    ax.set_xlabel("critic reward per video (expected s(label), mean over dimensions)")
    ax.set_ylabel("videos")
    ax.set_xlim(0, 1)
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _style(ax)
    return _png(fig)


def _label_bars(results: dict) -> bytes:
    fig = _figure(9.0, 3.0)
    axes = fig.subplots(1, len(hra.DIMENSIONS), sharey=True)
    x = np.arange(len(hra.LABELS))
    for ax, dim in zip(axes, hra.DIMENSIONS):
        for i, model in enumerate(("base", "aligned")):
            fractions = results["models"][model]["label_fractions"][dim]
            ax.bar(x + (i - 0.5) * 0.38, [100 * fractions[l] for l in hra.LABELS], width=0.38, color=COLOURS[model],
                   label=model)
        ax.set_xticks(x, hra.LABELS)
        ax.set_title(dim)
        _style(ax)
    axes[0].set_ylabel("% of videos")
    axes[-1].legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


def _oracle_plots(results: dict) -> bytes:
    checks = _check_order(results)
    fig = _figure(10.0, 3.4)
    left, right = fig.subplots(1, 2, width_ratios=[1.4, 1])
    y = np.arange(len(checks))
    for i, model in enumerate(("base", "aligned")):
        rates = (results["models"][model].get("oracle") or {}).get("checks", {})
        left.barh(y + (i - 0.5) * 0.38, [100 * rates.get(c, 0.0) for c in checks], height=0.38,
                  color=COLOURS[model], label=model)
    dims = results["oracle_definition"]["checks"]
    left.set_yticks(y, [f"{c} ({dims[c]['dimension']})" for c in checks])
    left.invert_yaxis()
    left.set_xlim(0, 100)
    left.set_xlabel("% of toy videos passing")
    left.legend(frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2)
    left.spines[["top", "right"]].set_visible(False)
    for model in ("base", "aligned"):
        pts = [(v["oracle"]["score"], v["reward"]) for v in results["videos"]
               if v["model"] == model and v.get("oracle") and v.get("reward") is not None]
        if pts:
            o, r = np.asarray(pts).T
            jitter = np.random.default_rng(0).uniform(-0.012, 0.012, len(o))  # oracle scores are k/8: spread ties
            right.scatter(o + jitter, r, s=18, alpha=0.7, color=COLOURS[model], label=model)
    right.set_xlabel("oracle score (fraction of checks passed)")
    right.set_ylabel("critic reward")
    right.set_xlim(-0.05, 1.05)
    right.set_title("critic vs oracle, per video", fontsize=10)
    _style(right)
    return _png(fig)


def _check_order(results: dict) -> list[str]:
    """Oracle checks by dimension (semantic, motion, fidelity), as `evaluate.ORACLE_CHECKS` lists them."""
    from lift.stages.evaluate import ORACLE_CHECKS

    names = list(results["oracle_definition"]["checks"])
    known = list(ORACLE_CHECKS)
    return sorted(names, key=lambda n: (known.index(n) if n in known else len(known), n))


def _curves_plot(stage: str, scalars: dict[str, list[tuple[int, float]]]) -> bytes:
    tags = [t for t in CURVES if t in scalars]
    tags += [t for t in sorted(scalars) if t not in tags and ("loss" in t or "reward" in t)]
    tags = tags[:MAX_CURVES] or sorted(scalars)[:MAX_CURVES]
    fig = _figure(3.0 * len(tags) + 0.6, 2.7)
    axes = np.atleast_1d(fig.subplots(1, len(tags)))
    for ax, tag in zip(axes, tags):
        steps, values = zip(*scalars[tag])
        ax.plot(steps, values, color=COLOURS["aligned"] if stage == "align" else "#3f6fb5", linewidth=1.5)
        ax.set_title(tag, fontsize=10)
        ax.set_xlabel("step")
        if tag == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        _style(ax)
    fig.suptitle(f"{stage} training", fontsize=11)
    return _png(fig)


def _strip(url: str) -> np.ndarray:
    frames = video.read_video(url, SAMPLE_FRAMES).numpy()  # (T, H, W, 3)
    t, h, w, _ = frames.shape
    scale = max(1, round(SAMPLE_HEIGHT / h))
    frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    gap = np.full((h * scale, 3, 3), 255, dtype=np.uint8)
    parts = []
    for i, f in enumerate(frames):
        parts += [f] if i == 0 else [gap, f]
    return np.concatenate(parts, axis=1)


def _encode_png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------- sections


def _eval_missing(rep: _Report) -> str:
    return _missing("evaluation results", storage.join(rep.run, "eval/results.json"),
                    "Run `lift evaluate` (or `lift pipeline`) to fill this section.")


def _summary(rep: _Report, results: dict | None, accuracy: dict | None) -> Section:
    sec = Section("summary", "Summary")
    cards = []
    if results:
        models, cmp = results["models"], results["comparison"]
        cards.append(("Critic reward", f"{_num(models['base']['reward']['mean'])} → "
                      f"{_num(models['aligned']['reward']['mean'])}",
                      f"gain {_ci(cmp['reward_gain'])}<br>{_gain_verdict(cmp['reward_gain'])}"))
        wr = cmp["win_rate"]
        interval = (f"95% CI [{100 * wr['low']:.1f}%, {100 * wr['high']:.1f}%]" if wr.get("low") is not None
                    else "too few pairs for an interval")
        cards.append(("Win rate of aligned", "–" if wr["mean"] is None else f"{100 * wr['mean']:.1f}%",
                      f"{interval}<br>{cmp['wins']} wins · {cmp['ties']} ties · {cmp['losses']} losses of "
                      f"{cmp['pairs']} pairs"))
        ob, oa = (models[m].get("oracle") for m in ("base", "aligned"))
        if ob and oa:
            cards.append(("Oracle score", f"{_num(ob['score']['mean'])} → {_num(oa['score']['mean'])}",
                          f"gain {_ci(cmp['oracle_gain'])}<br>{_gain_verdict(cmp['oracle_gain'])}"))
        else:
            cards.append(("Oracle score", "–", "no toy-world prompts in the evaluation"))
    if accuracy:
        cards.append(("Critic accuracy (avg)", f"{accuracy['accuracy']['avg']:.1f}%",
                      f"majority class {accuracy['majority_baseline']['avg']:.1f}% · "
                      f"{accuracy['videos']} test videos"))
    if cards:
        sec.body.append('<div class="cards">' + "".join(
            f'<div class="card"><div class="k">{_esc(k)}</div><div class="v">{v}</div><div class="n">{n}</div></div>'
            for k, v, n in cards) + "</div>")
    if results:
        cmp = results["comparison"]
        ob, oa = (results["models"][m].get("oracle") for m in ("base", "aligned"))
        if ob and oa and cmp["reward_gain"].get("low") is not None and cmp["oracle_gain"].get("high") is not None:
            critic_up = cmp["reward_gain"]["low"] > 0
            oracle_up = cmp["oracle_gain"]["low"] > 0
            if critic_up and not oracle_up:
                sec.body.append('<p class="warn">The critic\'s reward rose but the oracle\'s score did not: '
                                "the aligned model may be exploiting the critic (reward hacking).</p>")
    else:
        sec.body.append(_eval_missing(rep))
        sec.filled = False
    rows = []
    for stage, folder in STAGE_FOLDERS:
        marker = storage.read_marker(storage.join(rep.run, folder))
        if marker:
            state = '<span class="good">complete</span>'
        elif storage.exists(storage.join(rep.run, folder, storage.STARTED)):
            state = '<span class="bad">started, not sealed</span>'
        else:
            state = '<span class="dim">not run</span>'
        when = f"{marker.get('time', '')} · {marker.get('seconds', '–')} s" if marker else ""
        rows.append([f"<code>{_esc(stage)}</code>", f"<code>{_esc(folder)}/</code>", state, _esc(when)])
    sec.body.append("<h3>Stages</h3>" + _table(["stage", "output", "state", "sealed"], rows, "compact"))
    return sec


def _accuracy(rep: _Report, accuracy: dict | None) -> Section:
    sec = Section("critic-accuracy", "Critic accuracy")
    url = storage.join(rep.run, "critic/eval/accuracy.json")
    if not accuracy:
        sec.body.append(_missing("the critic's accuracy table", url, "Run `lift critic-eval` to fill this section."))
        sec.filled = False
        return sec
    acc, base = accuracy["accuracy"], accuracy["majority_baseline"]
    cols = [*hra.DIMENSIONS, "avg"]
    rows = [[f"<b>this critic</b> <span class=\"dim\">({_esc(accuracy.get('answer_format', ''))}, "
             f"{_esc(accuracy.get('mode', ''))})</span>", *(f"<b>{acc[c]:.2f}</b>" for c in cols)],
            ["majority class", *(f"{base[c]:.2f}" for c in cols)]]
    rows += [[f"{_esc(name)} <span class=\"dim\">(paper)</span>", *(f"{v:.2f}" for v in vals)]
             for name, vals in critic_eval.PAPER.items()]
    sec.body.append(f"<p>Accuracy (%) on {accuracy['videos']} videos of the <code>{_esc(accuracy.get('split', 'test'))}"
                    "</code> split, next to LiFT's Table 2 (different data: the paper's rows are on LiFT-HRA's "
                    "test split; the toy world's are on toy clips).</p>")
    sec.body.append(_table(["critic", *cols], rows, "numbers"))
    confusion = accuracy.get("confusion")
    if confusion:
        blocks = []
        for d in hra.DIMENSIONS:
            crow = [[f"<b>{t}</b>", *(str(confusion[d][t][p]) for p in hra.LABELS)] for t in hra.LABELS]
            blocks.append(f"<div><h4>{d}</h4>" + _table(["truth \\ predicted", *hra.LABELS], crow, "numbers compact")
                          + "</div>")
        sec.body.append('<div class="row">' + "".join(blocks) + "</div>")
    return sec


def _rewards(rep: _Report, results: dict | None) -> Section:
    sec = Section("rewards", "Critic reward before and after alignment")
    if not results:
        sec.body.append(_eval_missing(rep))
        sec.filled = False
        return sec
    models, cmp = results["models"], results["comparison"]
    sec.body.append(f"<p>{results['prompts']} held-out prompts × {results['videos_per_prompt']} seeds; both models "
                    "sample each prompt-seed pair with the same seed. Reward = expected s(label) under the critic's "
                    "label probabilities, mean over dimensions (LiFT's r). Intervals are 95%, cluster-robust over "
                    "prompts (a prompt's seeds are not independent).</p>")
    sec.body.append(_img(rep.png("reward_hist.png", _reward_histogram(results)), "reward histograms"))
    rows = [[f'<span class="swatch" style="background:{COLOURS[m]}"></span>{m}', str(models[m]["videos"]),
             _ci(models[m]["reward"]), _esc(results[m]["name_or_path"])] for m in ("base", "aligned")]
    sec.body.append(_table(["model", "videos", "mean reward [95% CI]", "model path"], rows))
    sec.body.append(_table(
        ["paired comparison", "value [95% CI]"],
        [["reward gain (aligned − base)", _ci(cmp["reward_gain"]) + " " + _gain_verdict(cmp["reward_gain"])],
         ["win rate of aligned (ties ½)", _ci(cmp["win_rate"], 1, percent=True)],
         ["wins / ties / losses", f"{cmp['wins']} / {cmp['ties']} / {cmp['losses']} of {cmp['pairs']} pairs"]]))
    return sec


def _labels(rep: _Report, results: dict | None) -> Section:
    sec = Section("labels", "Labels per dimension")
    if not results:
        sec.body.append(_eval_missing(rep))
        sec.filled = False
        return sec
    sec.body.append("<p>The critic's most likely label per video and dimension.</p>")
    sec.body.append(_img(rep.png("labels.png", _label_bars(results)), "label distribution per dimension"))
    rows = []
    for d in hra.DIMENSIONS:
        for m in ("base", "aligned"):
            f = results["models"][m]["label_fractions"][d]
            p = results["models"][m]["label_probs"][d]
            rows.append([d, m, *(f"{100 * f[l]:.0f}% <span class=\"dim\">(p̄ {p[l]:.2f})</span>" for l in hra.LABELS)])
    sec.body.append(_table(["dimension", "model", *hra.LABELS], rows, "numbers compact"))
    return sec


def _oracle(rep: _Report, results: dict | None) -> Section:
    sec = Section("oracle", "Oracle checks (toy world)")
    if not results:
        sec.body.append(_eval_missing(rep))
        sec.filled = False
        return sec
    models, cmp, definition = results["models"], results["comparison"], results["oracle_definition"]
    if not (models["base"].get("oracle") and models["aligned"].get("oracle")):
        sec.body.append('<p class="missing"><b>Not available:</b> no evaluation prompt is a toy-world prompt, so '
                        "there is no oracle reading (it exists only for the toy world).</p>")
        sec.filled = False
        return sec
    sec.body.append(f"<p>An independent check of every toy video from its frames alone (<code>lift.toy.measure</code>"
                    f", no model). Oracle score: {_esc(definition['score'])}. A critic reward that rises while the "
                    "oracle score does not is the mark of reward hacking.</p>")
    sec.body.append(_img(rep.png("oracle.png", _oracle_plots(results)), "oracle checks and critic vs oracle"))
    rows = [["<b>oracle score</b>", _ci(models["base"]["oracle"]["score"]), _ci(models["aligned"]["oracle"]["score"]),
             ""]]
    for name in _check_order(results):
        spec = definition["checks"][name]
        rows.append([f"{name} <span class=\"dim\">({spec['dimension']})</span>",
                     f"{100 * models['base']['oracle']['checks'][name]:.0f}%",
                     f"{100 * models['aligned']['oracle']['checks'][name]:.0f}%", _esc(spec["passes_when"])])
    sec.body.append(_table(["check", "base", "aligned", "passes when"], rows, "compact"))
    sec.body.append(f"<p>Oracle gain (aligned − base) over {cmp['oracle_pairs']} pairs: {_ci(cmp['oracle_gain'])} "
                    f"{_gain_verdict(cmp['oracle_gain'])}; oracle win rate {_ci(cmp['oracle_win_rate'], 1, True)}.</p>")
    return sec


def _round_results(run: str) -> list[tuple[int, dict]]:
    """(round, eval results) of every evaluated round of `lift pipeline rounds=N`, round 1 first."""
    ks = [1, *sorted(int(k) for k in storage.listdir(storage.join(run, ROUNDS)) if k.isdigit() and int(k) > 1)]
    found = [(k, _read_json(storage.join(round_folder(run, k), STAGES["evaluate"].output, "results.json")))
             for k in ks]
    return [(k, r) for k, r in found if r]


def _rounds(rep: _Report, rounds: list[tuple[int, dict]]) -> Section:
    """LiFT in rounds: the critic reward and the oracle score of each round's aligned model next to the base's."""
    sec = Section(ROUNDS_SECTION, "Rounds")
    sec.body.append("<p>Round k aligns round k−1's model again on its own fresh rollouts (<code>lift pipeline "
                    "rounds=N</code>); every round is evaluated against the same base on the same held-out prompts "
                    "and seeds. Intervals are 95%, cluster-robust over prompts; gains are paired by prompt and "
                    "seed.</p>")
    oracle = lambda results, m: (results["models"][m].get("oracle") or {}).get("score")  # noqa: E731
    base = rounds[0][1]
    rows = [["base", _ci(base["models"]["base"]["reward"]), "", _ci(oracle(base, "base")), "",
             _esc(base["base"]["name_or_path"])]]
    for k, results in rounds:
        cmp = results["comparison"]
        rows.append([f"round {k}", _ci(results["models"]["aligned"]["reward"]), _ci(cmp["reward_gain"]),
                     _ci(oracle(results, "aligned")), _ci(cmp.get("oracle_gain")),
                     _esc(results["aligned"]["name_or_path"])])
    sec.body.append(_table(["model", "critic reward", "reward gain vs base", "oracle score", "oracle gain vs base",
                            "model path"], rows, "numbers compact"))
    return sec


def read_scalars(url: str) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of the TensorBoard event files under `url` (any storage): tag -> [(step, value)].

    Event files are copied to a local temporary folder (TensorBoard reads local files); where several files
    log the same step (a resumed run), the latest write wins.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fs, root = storage.filesystem(url)
    fs.invalidate_cache(root)
    files = sorted(p for p in fs.find(root) if "tfevents" in p.rsplit("/", 1)[-1]) if fs.exists(root) else []
    series: dict[str, dict[int, tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="lift-report-") as tmp:
        for i, path in enumerate(files):
            local = os.path.join(tmp, f"{i:04d}", path.rsplit("/", 1)[-1])
            os.makedirs(os.path.dirname(local))
            with open(local, "wb") as f:
                f.write(fs.cat_file(path))
            acc = EventAccumulator(local, size_guidance={"scalars": 0})
            acc.Reload()
            for tag in acc.Tags().get("scalars", []):
                for e in acc.Scalars(tag):
                    old = series.setdefault(tag, {}).get(e.step)
                    if old is None or e.wall_time >= old[0]:
                        series[tag][e.step] = (e.wall_time, e.value)
    return {tag: [(s, v) for s, (_, v) in sorted(points.items())] for tag, points in series.items()}


def _training(rep: _Report) -> Section:
    sec = Section("training", "Training curves")
    found = 0
    for stage, folder in TRAINING:
        url = storage.join(rep.run, folder)
        scalars = read_scalars(url)
        sec.body.append(f"<h3>{_esc(stage)}</h3>")
        if not scalars:
            sec.body.append(_missing(f"{stage} training curves", url,
                                     f"Run `lift {stage}` to fill this part (TensorBoard event files)."))
            continue
        found += 1
        last = {t: pts[-1] for t, pts in scalars.items()}
        sec.body.append(_img(rep.png(f"curves_{stage}.png", _curves_plot(stage, scalars)), f"{stage} training"))
        sec.body.append('<p class="dim">Last logged: ' + " · ".join(
            f"{_esc(t)} {v:.4g} (step {s})" for t, (s, v) in sorted(last.items())) + "</p>")
    sec.filled = found > 0
    return sec


def _samples(rep: _Report, results: dict | None) -> Section:
    sec = Section("samples", "Samples: base vs aligned")
    if not results:
        sec.body.append(_eval_missing(rep))
        sec.filled = False
        return sec
    by = {(v["model"], v["prompt_id"], v["index"]): v for v in results["videos"]}
    pairs = sorted({(v["prompt_id"], v["index"]) for v in results["videos"] if v["model"] == "base"
                    and ("aligned", v["prompt_id"], v["index"]) in by}, key=lambda p: (p[1], p[0]))
    pairs = pairs[:MAX_SAMPLES]  # seed 0 of every prompt first, then further seeds
    if not pairs:
        sec.body.append('<p class="missing"><b>Not available:</b> the results hold no prompt-seed pair with videos of '
                        "both models.</p>")
        sec.filled = False
        return sec
    badges = " ".join(f'<span class="lab" style="background:{c}">&nbsp;</span> {l}' for l, c in LABEL_COLOURS.items())
    sec.body.append(f"<p>{SAMPLE_FRAMES} frames spread over each video; the same prompt and seed in each row. "
                    f"Under each: critic reward · oracle score · the critic's label for semantic (S), motion (M) "
                    f"and fidelity (F): {badges}.</p>")
    rows = []
    for n, (pid, index) in enumerate(pairs):
        cells = []
        for model in ("base", "aligned"):
            v = by[(model, pid, index)]
            url = storage.join(rep.run, "eval", v["video"])
            if not storage.exists(url):
                cells.append(_missing(f"{model} video", url, ""))
                continue
            src = rep.png(f"sample_{n:02d}_{model}.png", _encode_png(_strip(url)))
            labels = " ".join(f'<span class="lab" style="background:{LABEL_COLOURS[v["labels"][d]]}" '
                              f'title="{d}: {v["labels"][d]}">{d[0].upper()}</span>'
                              for d in hra.DIMENSIONS if v.get("labels", {}).get(d) in LABEL_COLOURS)
            oracle = v.get("oracle")
            cells.append(_img(src, f"{model} frames: {v['prompt']}", "frames") +
                         f'<div class="cap">reward {_num(v.get("reward"))} · oracle '
                         f'{_num(oracle["score"], 2) if oracle else "–"} {labels}</div>')
        v = by[("base", pid, index)]
        rows.append([f"<b>{_esc(v['prompt'])}</b><br><span class=\"dim\">{_esc(pid)} · seed {v['seed']}</span>",
                     *cells])
    sec.body.append(_table(["prompt", "base", "aligned"], rows, "samples"))
    return sec


def _config(rep: _Report) -> Section:
    sec = Section("config", "Configuration")
    whole = storage.join(rep.run, "config.yaml")
    found = [("pipeline", whole)] if storage.exists(whole) else []
    if not found:
        found = [(stage, url) for stage, folder in STAGE_FOLDERS
                 if storage.exists(url := storage.join(rep.run, folder, "config.yaml"))]
    if not found:
        sec.body.append(_missing("resolved configs", whole, "No stage has saved its config.yaml yet."))
        sec.filled = False
        return sec
    sec.body.append("<p>The resolved configuration each output was made with (secrets never appear in it).</p>")
    for stage, url in found:
        text = storage.read_text(url)
        sec.body.append(f'<details{" open" if len(found) == 1 else ""}><summary><code>{_esc(stage)}</code> · '
                        f"<code>{_esc(url)}</code></summary><pre>{_esc(text)}</pre></details>")
    return sec


# -------------------------------------------------------------------------------------------------------- page

CSS = """
:root { --fg:#1d2330; --dim:#6b7385; --line:#e3e6ec; --bg:#f6f7f9; --accent:#e0702b; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--fg);
       background:var(--bg); }
header { background:#1d2330; color:#fff; padding:22px 32px 16px; }
header h1 { margin:0; font-size:22px; } header .sub { color:#aab2c3; font-size:13px; margin-top:4px; }
nav { margin-top:12px; display:flex; flex-wrap:wrap; gap:6px; }
nav a { color:#fff; text-decoration:none; font-size:13px; padding:3px 10px; border-radius:12px; background:#343c4e; }
nav a.empty { background:#5a3a30; }
main { max-width:1180px; margin:0 auto; padding:8px 24px 40px; }
section { background:#fff; border:1px solid var(--line); border-radius:10px; padding:8px 24px 18px; margin:18px 0; }
h2 { font-size:19px; margin:14px 0 10px; } h3 { font-size:15px; margin:16px 0 6px; }
h4 { margin:6px 0; font-size:14px; }
table { border-collapse:collapse; margin:10px 0; font-size:14px; }
th, td { padding:6px 12px; border-bottom:1px solid var(--line); text-align:left; vertical-align:top; }
th { font-weight:600; color:var(--dim); font-size:12px; text-transform:uppercase; letter-spacing:.03em; }
table.numbers td + td { text-align:right; font-variant-numeric:tabular-nums; }
table.compact td, table.compact th { padding:3px 10px; }
table.samples td { vertical-align:middle; } table.samples td:first-child { max-width:230px; }
img.plot { max-width:100%; height:auto; display:block; margin:8px 0; }
img.frames { image-rendering:pixelated; display:block; border-radius:4px; max-width:100%; height:auto; }
.cap { font-size:12px; color:var(--dim); margin-top:3px; }
.lab { display:inline-block; color:#fff; font-size:10px; font-weight:700; width:16px; text-align:center;
       border-radius:3px; }
.cards { display:flex; flex-wrap:wrap; gap:14px; margin:8px 0 4px; }
.card { flex:1 1 230px; border:1px solid var(--line); border-radius:8px; padding:10px 14px; background:#fbfbfc; }
.card .k { font-size:12px; color:var(--dim); text-transform:uppercase; letter-spacing:.03em; }
.card .v { font-size:24px; font-weight:650; margin:2px 0; } .card .n { font-size:12.5px; color:var(--dim); }
.dim { color:var(--dim); } .good { color:#2e7d4a; font-weight:600; } .bad { color:#b3382c; font-weight:600; }
.missing { background:#fff4e5; border:1px solid #f3c98b; border-radius:6px; padding:8px 12px; }
.warn { background:#fdecea; border:1px solid #f1a9a0; border-radius:6px; padding:8px 12px; }
.swatch { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:6px; }
.row { display:flex; flex-wrap:wrap; gap:18px; }
pre { background:#f3f4f7; padding:12px; border-radius:6px; overflow:auto; font-size:12.5px; max-height:480px; }
summary { cursor:pointer; margin:6px 0; }
footer { text-align:center; color:var(--dim); font-size:12px; padding:10px; }
"""

# Marks every image that failed to load, visibly and in the DOM (tests read it back with headless Chromium).
SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.images, broken = 0;
  for (var i = 0; i < imgs.length; i++) {
    var ok = imgs[i].complete && imgs[i].naturalWidth > 0;
    imgs[i].setAttribute('data-loaded', ok ? 'yes' : 'no');
    if (!ok) {
      broken++;
      var note = document.createElement('span');
      note.className = 'missing';
      note.textContent = 'image failed to load: ' + imgs[i].getAttribute('src');
      imgs[i].insertAdjacentElement('afterend', note);
    }
  }
  document.body.setAttribute('data-images', (imgs.length - broken) + '/' + imgs.length);
});
"""


def _page(run_url: str, sections: list[Section]) -> str:
    empty = ' class="empty" title="an input of this section is missing"'
    nav = "".join(f'<a href="#{s.id}"{"" if s.filled else empty}>{_esc(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{s.id}" data-filled="{str(s.filled).lower()}"><h2>{_esc(s.title)}</h2>'
                   + "".join(s.body) + "</section>" for s in sections)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>LiFT report · {_esc(run_url)}</title><style>{CSS}</style><script>{SCRIPT}</script></head>"
            f'<body><header><h1>LiFT run report</h1><div class="sub"><code>{_esc(run_url)}</code> · built {when} '
            f"from stored outputs</div><nav>{nav}</nav></header><main>{body}</main>"
            f"<footer>lift report · LiFT: arXiv 2412.04814</footer></body></html>\n")


def write_report(run_url: str) -> str:
    """Build RUN_URL/report/index.html and its PNGs from the run's stored outputs; returns the index's URL."""
    run_url = run_url.rstrip("/")
    if not storage.exists(run_url):
        raise FileNotFoundError(f"{run_url}: no such run folder")
    rep = _Report(run_url, storage.join(run_url, REPORT))
    results = _read_json(storage.join(run_url, "eval", "results.json"))
    accuracy = _read_json(storage.join(run_url, "critic", "eval", "accuracy.json"))
    sections = [
        _summary(rep, results, accuracy),
        _accuracy(rep, accuracy),
        _rewards(rep, results),
        _labels(rep, results),
        _oracle(rep, results),
        *([_rounds(rep, rounds)] if len(rounds := _round_results(run_url)) > 1 else []),
        _training(rep),
        _samples(rep, results),
        _config(rep),
    ]
    index = storage.join(rep.out, INDEX)
    storage.write_text(index, _page(run_url, sections))
    logs.event(log, "report written", url=index, images=len(rep.images),
               missing=",".join(s.id for s in sections if not s.filled) or "none")
    return index
