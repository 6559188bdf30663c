"""What the report says about the trust in its numbers and what it left out: the verdicts
of its cells (the banner at the top of the page, or a quiet line of counts), the older runs
and earlier attempts not shown, the configurations, and the cells whose output was wrong.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import pandas as pd

from bench.escape import markdown_text
from bench.quality import QUALITIES
from bench.quality import summary as quality_counts
from bench.report.data import UNTRUSTED, ReportData

BANNER_LIST_OPEN = 12  # more untrusted cells than this: the banner's list is folded


def _e(v: object) -> str:
    return html.escape(str(v), quote=True)


@dataclass(frozen=True, slots=True)
class QualityNotice:
    """What the report says about the verdicts of its cells: counts by quality (cells
    written before verdicts left out), the cells whose number cannot be trusted (contended
    or implausible; rows of ``measured_cells``), and whether that needs the banner."""

    counts: dict[str, int]
    unjudged: int
    untrusted: pd.DataFrame

    @property
    def banner(self) -> bool:
        return not self.untrusted.empty

    @property
    def judged(self) -> int:
        return sum(self.counts.values())

    def counts_sentence(self) -> str:
        before = f" ({self.unjudged} more written before verdicts)" if self.unjudged else ""
        return f"Of {self.judged} measured cells: {quality_counts(self.counts)}{before}."

    def todo(self) -> list[str]:
        """What to do, per kind of verdict present (docs/noise.md)."""
        out = []
        if self.counts.get("contended"):
            out.append(
                "Contended cells did not get their CPU or GPU during their timed window "
                "(other processes, a hypervisor or a slowing GPU took it), so they read slow "
                "by an unknown amount: do not compare them. Measure them again on a quiet "
                "host: `effbench run --resume RUN_FOLDER` measures every cell without an "
                "acceptable row, `--remeasure N` retries contended cells within a run, and "
                "on a shared runner leave cores free with a lower `--threads` or pin the "
                "worker's cores; `--require-quiet` refuses to start on a busy host."
            )
        if self.counts.get("implausible"):
            out.append(
                "Implausible cells are faster than the measured compute roof: the roof was "
                "measured at a busier moment (or the MAC count is wrong), so they are not "
                "read as a fraction of it. Measure the ceilings again on a quiet host "
                "(`effbench peak`)."
            )
        if self.counts.get("noisy"):
            out.append(
                "Noisy cells missed the precision target (their median's confidence interval "
                "is wider than asked): fair, but less precise; a longer `--max-time` helps."
            )
        return out


def quality_notice(data: ReportData) -> QualityNotice:
    """The verdicts of every measured cell (wrong outputs included) of ``data``."""
    cells = data.measured_cells
    judged = cells[cells["quality"].isin(QUALITIES)]
    counts = {q: int(n) for q, n in judged["quality"].value_counts().items()}
    untrusted = cells[cells["quality"].isin(UNTRUSTED)].sort_values(
        ["setup", "model", "batch_size"], kind="stable"
    )
    return QualityNotice(counts, len(cells) - len(judged), untrusted.reset_index(drop=True))


def untrusted_items(notice: QualityNotice) -> list[str]:
    """One line per contended or implausible cell (plain text, to be escaped)."""
    out = []
    for r in notice.untrusted.itertuples():
        repeats = f" in {r.quality_repeats} repeats" if isinstance(r.quality_repeats, str) else ""
        why = f": {r.quality_reason}" if isinstance(r.quality_reason, str) else ""
        out.append(
            f"{r.model} at batch {int(r.batch_size)} on {r.setup}: {r.quality}{repeats}{why}"
        )
    return out


def with_code(text: str) -> str:
    """``text`` escaped, its `backticked` spans as <code>."""
    parts = text.split("`")
    return "".join(f"<code>{_e(p)}</code>" if i % 2 else _e(p) for i, p in enumerate(parts))


def quality_html(notice: QualityNotice) -> list[str]:
    """The banner at the top of the page (a contended or implausible cell), or a quiet line
    of the counts (every judged cell clean or noisy); nothing when no cell was judged."""
    if not notice.judged:
        return []
    if not notice.banner:
        noisy = notice.counts.get("noisy", 0)
        share = (
            f" {noisy} of {notice.judged} ({noisy / notice.judged:.0%}) are noisy: their "
            "median's confidence interval missed the precision target (fair conditions, less "
            "precise than asked)."
            if noisy
            else ""
        )
        return [
            f'<p class="lead quality-note" id="quality-note">Quality: '
            f"{_e(quality_counts(notice.counts))} cells; no cell contended or implausible."
            f"{_e(share)} See <code>docs/noise.md</code>.</p>"
        ]
    items = "".join(f"<li>{_e(t)}</li>" for t in untrusted_items(notice))
    n = len(notice.untrusted)
    listing = f"<ul>{items}</ul>"
    if n > BANNER_LIST_OPEN:
        listing = f"<details><summary>The {n} cells</summary>{listing}</details>"
    todo = "".join(f"<p>{with_code(t)}</p>" for t in notice.todo())
    return [
        '<section class="banner" id="quality-banner" role="alert">'
        f"<p><strong>{n} cell(s) cannot be trusted (contended or implausible).</strong> "
        f"{_e(notice.counts_sentence())} They are drawn hollow in every figure and named in "
        "each figure's caption; the summary's <code>quality</code> column says which batch "
        f"sizes.</p>{listing}{todo}"
        "<p>How each verdict is made, and what to do on a shared runner: "
        "<code>docs/noise.md</code>.</p></section>"
    ]


def quality_markdown(notice: QualityNotice) -> list[str]:
    if not notice.judged:
        return []
    if not notice.banner:
        return ["", markdown_text(f"Quality: {quality_counts(notice.counts)} cells.")]
    lines = ["", "**" + markdown_text(
        f"{len(notice.untrusted)} cell(s) cannot be trusted (contended or implausible). "
        + notice.counts_sentence()
    ) + "**", ""]  # fmt: skip
    lines += [f"- {markdown_text(t)}" for t in untrusted_items(notice)]
    for t in [*notice.todo(), "How each verdict is made: docs/noise.md."]:
        lines += ["", markdown_text(t)]
    return lines


def attempts_sentence(data: ReportData) -> str:
    return (
        f"{data.attempts_not_kept} earlier attempt(s) of re-measured cells are not shown: of "
        "the attempts of a cell, the one with the best quality is."
    )


def superseded_sentence(data: ReportData) -> str:
    """The older runs left out because a more recent run measured the same cells."""
    if not data.superseded:
        return ""
    runs = "; ".join(
        f"{s.run_id} ({s.cells} cell(s), {s.rows} row(s); measured again by {', '.join(s.by)})"
        for s in data.superseded
    )
    return (
        "Older runs not shown: " + runs + ". Of each cell and setup the report keeps the "
        "most recent run's rows (runs made at different times are not repeats of one "
        "measurement); set runs against each other with `effbench compare`, or give the "
        "report only the runs to show."
    )


def configs_sentence(data: ReportData) -> str:
    """The configurations, and which figures show one of them per panel (numbers from the
    figure registry, imported here: the summary's text needs no matplotlib otherwise)."""
    from bench.report.figures import SPEEDUP, figure, per_setup_numbers

    return (
        f"Configurations: {', '.join(data.configs)}. Each setup label ends in its "
        f"configuration, so every table row and every panel of figures {per_setup_numbers()} "
        f"shows one configuration, never a mix; figure {figure(SPEEDUP).number} sets each "
        "against eager."
    )


def wrong_sentence(data: ReportData) -> str:
    w = data.wrong_output
    cells = "; ".join(
        f"{r.model} {r.config} batch {int(r.batch_size)} on {r.setup}" for r in w.itertuples()
    )
    return (
        f"Wrong output: {len(w)} cell(s) differ from eager float32 beyond their dtype's "
        f"tolerance ({cells}). They are left out of every figure and of the table's timings "
        "(marked WRONG): a wrong answer fast is not a fast network."
    )
