"""A small PromQL subset evaluated over scraped samples, so that the dashboard's own queries can be checked and
drawn without Prometheus or Grafana (neither is installable on the project's machines).

What it understands (all the dashboard uses, nothing more):
  * Prometheus text exposition (parse_exposition), one scrape per target and time (Samples.add_scrape);
  * number literals, vector selectors with =, !=, =~, !~ matchers, range selectors [30s] / [1m] / [5m];
  * rate() and increase() over a range, as Prometheus computes them: the counter's increase between the first
    and the last sample inside the window (a drop is a reset), extrapolated towards the window's edges;
  * sum / max / min / avg / count, with `by (labels)` before or after the argument;
  * histogram_quantile(q, v) over `le`-labelled buckets (linear interpolation as in Prometheus);
  * clamp_min(v, x), + - * / between scalars and vectors, and between vectors with identical label sets
    (one-to-one; the metric name is dropped);
  * Grafana variables `$name` / `${name}` (substituted from a dict before parsing; $__rate_interval included).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Optional, Union

Labels = tuple  # sorted tuple of (name, value), including ("__name__", metric)

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$')
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def parse_exposition(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample line of a Prometheus text exposition."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise ValueError(f"not a sample line: {line!r}")
        labels: dict[str, str] = {}
        body = m.group(3) or ""
        pos = 0
        while pos < len(body):
            lm = _LABEL.match(body, pos)
            if not lm:
                raise ValueError(f"bad labels in {line!r}")
            labels[lm.group(1)] = lm.group(2).replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
            pos = lm.end()
        out.append((m.group(1), labels, float(m.group(4))))
    return out


@dataclass
class Samples:
    """Time series: {labels (with __name__): [(t, value), ...]} in time order."""

    series: dict[Labels, list[tuple[float, float]]] = field(default_factory=dict)

    def add_scrape(self, t: float, text: str, target_labels: dict[str, str]) -> list[Labels]:
        """Adds one scrape; returns the series that appeared more than once in it (an exposition with
        duplicate series is invalid: Prometheus rejects the whole scrape)."""
        seen: set[Labels] = set()
        dups = []
        for name, labels, value in parse_exposition(text):
            key = tuple(sorted({**labels, **target_labels, "__name__": name}.items()))
            if key in seen:
                dups.append(key)
                continue
            seen.add(key)
            self.series.setdefault(key, []).append((t, value))
        return dups

    def names(self) -> set[str]:
        return {dict(k)["__name__"] for k in self.series}

    def times(self) -> list[float]:
        return sorted({t for pts in self.series.values() for t, _ in pts})

    def to_json(self) -> list:
        return [{"labels": dict(k), "points": v} for k, v in self.series.items()]

    @classmethod
    def from_json(cls, data: list) -> "Samples":
        s = cls()
        for row in data:
            s.series[tuple(sorted(row["labels"].items()))] = [tuple(p) for p in row["points"]]
        return s


# ---------------------------------------------------------------------------------------------- parsing
_TOKEN = re.compile(r'\s*(?:(?P<num>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)|(?P<str>"(?:[^"\\]|\\.)*")'
                    r'|(?P<dur>\[\d+[smh]\])|(?P<op>=~|!~|!=|[-+*/(){},=])|(?P<id>[a-zA-Z_:][a-zA-Z0-9_:]*))')
_AGG = {"sum", "max", "min", "avg", "count"}
_FUNCS = {"rate", "increase", "histogram_quantile", "clamp_min"}


@dataclass
class Selector:
    name: str
    matchers: list[tuple[str, str, str]]
    range_s: Optional[float] = None


@dataclass
class Call:
    func: str
    args: list


@dataclass
class Agg:
    op: str
    by: list[str]
    arg: object


@dataclass
class BinOp:
    op: str
    lhs: object
    rhs: object


def substitute(expr: str, variables: dict[str, str]) -> str:
    def repl(m):
        name = m.group(1) or m.group(2)
        if name not in variables:
            raise KeyError(f"dashboard variable ${name} has no value")
        return str(variables[name])

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, expr)


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks: list[tuple[str, str]] = []
        pos = 0
        text = text.strip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise ValueError(f"cannot parse {text[pos:pos + 30]!r} in {text!r}")
            kind = m.lastgroup
            self.toks.append((kind, m.group(kind)))
            pos = m.end()
            while pos < len(text) and text[pos].isspace():
                pos += 1
        self.i = 0
        self.text = text

    def peek(self, k: int = 0) -> tuple[str, str]:
        return self.toks[self.i + k] if self.i + k < len(self.toks) else ("eof", "")

    def take(self, value: Optional[str] = None) -> tuple[str, str]:
        t = self.peek()
        if value is not None and t[1] != value:
            raise ValueError(f"expected {value!r}, got {t[1]!r} in {self.text!r}")
        self.i += 1
        return t

    def parse(self):
        e = self.expr()
        if self.peek()[0] != "eof":
            raise ValueError(f"trailing {self.peek()[1]!r} in {self.text!r}")
        return e

    def expr(self):
        e = self.term()
        while self.peek()[1] in ("+", "-"):
            op = self.take()[1]
            e = BinOp(op, e, self.term())
        return e

    def term(self):
        e = self.unary()
        while self.peek()[1] in ("*", "/"):
            op = self.take()[1]
            e = BinOp(op, e, self.unary())
        return e

    def unary(self):
        if self.peek()[1] == "-":
            self.take()
            return BinOp("*", -1.0, self.unary())
        return self.primary()

    def labels_list(self) -> list[str]:
        self.take("(")
        out = []
        while self.peek()[1] != ")":
            out.append(self.take()[1])
            if self.peek()[1] == ",":
                self.take()
        self.take(")")
        return out

    def primary(self):
        kind, val = self.peek()
        if kind == "num":
            self.take()
            return float(val)
        if val == "(":
            self.take()
            e = self.expr()
            self.take(")")
            return e
        if kind != "id":
            raise ValueError(f"unexpected {val!r} in {self.text!r}")
        if val in _AGG and self.peek(1)[1] in ("(", "by"):
            self.take()
            by: list[str] = []
            if self.peek()[1] == "by":
                self.take()
                by = self.labels_list()
            self.take("(")
            arg = self.expr()
            self.take(")")
            if self.peek()[1] == "by":
                self.take()
                by = self.labels_list()
            return Agg(val, by, arg)
        if val in _FUNCS and self.peek(1)[1] == "(":
            self.take()
            self.take("(")
            args = [self.expr()]
            while self.peek()[1] == ",":
                self.take()
                args.append(self.expr())
            self.take(")")
            return Call(val, args)
        self.take()
        matchers = []
        if self.peek()[1] == "{":
            self.take()
            while self.peek()[1] != "}":
                lname = self.take()[1]
                op = self.take()[1]
                kind, s = self.take()
                if kind != "str":
                    raise ValueError(f"label value must be a string in {self.text!r}")
                matchers.append((lname, op, s[1:-1]))
                if self.peek()[1] == ",":
                    self.take()
            self.take("}")
        sel = Selector(val, matchers)
        if self.peek()[0] == "dur":
            d = self.take()[1][1:-1]
            sel.range_s = float(d[:-1]) * {"s": 1, "m": 60, "h": 3600}[d[-1]]
        return sel


def parse(expr: str):
    return _Parser(expr).parse()


def selectors(node) -> list[Selector]:
    """Every vector selector in a parsed expression."""
    if isinstance(node, Selector):
        return [node]
    if isinstance(node, Call):
        return [s for a in node.args for s in selectors(a)]
    if isinstance(node, Agg):
        return selectors(node.arg)
    if isinstance(node, BinOp):
        return selectors(node.lhs) + selectors(node.rhs)
    return []


def grouping_labels(node) -> set[str]:
    """Every label named in a `by (...)` clause of a parsed expression."""
    if isinstance(node, Agg):
        return set(node.by) | grouping_labels(node.arg)
    if isinstance(node, Call):
        return set().union(*(grouping_labels(a) for a in node.args))
    if isinstance(node, BinOp):
        return grouping_labels(node.lhs) | grouping_labels(node.rhs)
    return set()


# ---------------------------------------------------------------------------------------------- evaluation
Vector = dict  # {labels tuple: value}
Value = Union[float, Vector]


def _matches(labels: dict, matchers) -> bool:
    for name, op, want in matchers:
        have = labels.get(name, "")
        if op == "=" and have != want:
            return False
        if op == "!=" and have == want:
            return False
        if op == "=~" and not re.fullmatch(want, have):
            return False
        if op == "!~" and re.fullmatch(want, have):
            return False
    return True


class Evaluator:
    def __init__(self, samples: Samples, lookback_s: float = 300.0) -> None:
        self.s = samples
        self.lookback = lookback_s

    def _select(self, sel: Selector):
        for key, pts in self.s.series.items():
            d = dict(key)
            if d["__name__"] == sel.name and _matches(d, sel.matchers):
                yield key, pts

    def eval(self, node, t: float) -> Value:
        if isinstance(node, float):
            return node
        if isinstance(node, Selector):
            if sel_range := node.range_s:
                raise ValueError(f"range selector {node.name}[{sel_range}s] outside rate()/increase()")
            out = {}
            for key, pts in self._select(node):
                last = [v for ts, v in pts if t - self.lookback < ts <= t]
                if last:
                    out[key] = last[-1]
            return out
        if isinstance(node, Call):
            return self._call(node, t)
        if isinstance(node, Agg):
            v = self.eval(node.arg, t)
            if not isinstance(v, dict):
                raise ValueError(f"{node.op}() of a scalar")
            groups: dict[Labels, list[float]] = {}
            for key, val in v.items():
                d = dict(key)
                gk = tuple(sorted((k, d.get(k, "")) for k in node.by))
                groups.setdefault(gk, []).append(val)
            fn = {"sum": sum, "max": max, "min": min, "avg": lambda xs: sum(xs) / len(xs), "count": len}[node.op]
            return {gk: float(fn(vals)) for gk, vals in groups.items()}
        if isinstance(node, BinOp):
            return self._binop(node.op, self.eval(node.lhs, t), self.eval(node.rhs, t))
        raise TypeError(node)

    def _call(self, node: Call, t: float) -> Value:
        f = node.func
        if f in ("rate", "increase"):
            sel = node.args[0]
            if not isinstance(sel, Selector) or sel.range_s is None:
                raise ValueError(f"{f}() needs a range selector")
            out = {}
            for key, pts in self._select(sel):
                win = [(ts, v) for ts, v in pts if t - sel.range_s < ts <= t]
                v = _extrapolated_increase(win, t - sel.range_s, t)
                if v is not None:
                    out[tuple((k, x) for k, x in key if k != "__name__")] = v / sel.range_s if f == "rate" else v
            return out
        if f == "clamp_min":
            v, lo = self.eval(node.args[0], t), self.eval(node.args[1], t)
            if isinstance(v, dict):
                return {k: max(x, lo) for k, x in v.items()}
            return max(v, lo)
        if f == "histogram_quantile":
            q, v = self.eval(node.args[0], t), self.eval(node.args[1], t)
            groups: dict[Labels, list[tuple[float, float]]] = {}
            for key, val in v.items():
                d = dict(key)
                le = d.pop("le", None)
                d.pop("__name__", None)
                if le is None:
                    continue
                groups.setdefault(tuple(sorted(d.items())), []).append((float(le), val))
            return {k: _quantile(q, sorted(b)) for k, b in groups.items()}
        raise ValueError(f"unknown function {f}")

    @staticmethod
    def _binop(op: str, a: Value, b: Value) -> Value:
        fn = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y,
              "/": lambda x, y: x / y if y != 0 else (math.nan if x == 0 else math.copysign(math.inf, x))}[op]

        def strip(key):
            return tuple((k, v) for k, v in key if k != "__name__")

        if not isinstance(a, dict) and not isinstance(b, dict):
            return fn(a, b)
        if not isinstance(a, dict):
            return {strip(k): fn(a, y) for k, y in b.items()}
        if not isinstance(b, dict):
            return {strip(k): fn(x, b) for k, x in a.items()}
        bs = {strip(k): y for k, y in b.items()}
        return {strip(k): fn(x, bs[strip(k)]) for k, x in a.items() if strip(k) in bs}

    def range_query(self, expr: str, times: list[float], variables: Optional[dict] = None):
        """{labels: [(t, value), ...]} of expr at each time (times where it has no value are left out)."""
        node = parse(substitute(expr, variables or {}))
        out: dict[Labels, list[tuple[float, float]]] = {}
        for t in times:
            v = self.eval(node, t)
            if not isinstance(v, dict):
                v = {(): v}
            for k, x in v.items():
                out.setdefault(k, []).append((t, x))
        return out


def _extrapolated_increase(win: list[tuple[float, float]], start: float, end: float) -> Optional[float]:
    """A counter's increase over [start, end] from its samples in that window, as Prometheus computes it
    (promql/functions.go, extrapolatedRate): resets handled, extrapolated towards the window's edges by at
    most half an average sample interval unless a sample is that close to the edge, never below zero."""
    if len(win) < 2:
        return None
    inc = 0.0
    for (_, a), (_, b) in zip(win, win[1:]):
        inc += b - a if b >= a else b
    sampled = win[-1][0] - win[0][0]
    if sampled <= 0:
        return None
    to_start, to_end = win[0][0] - start, end - win[-1][0]
    if inc > 0 and win[0][1] >= 0:
        to_start = min(to_start, sampled * win[0][1] / inc)
    avg = sampled / (len(win) - 1)
    interval = sampled
    interval += to_start if to_start < 1.1 * avg else avg / 2
    interval += to_end if to_end < 1.1 * avg else avg / 2
    return inc * interval / sampled


def _quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    if not buckets or buckets[-1][0] != math.inf:
        return math.nan
    total = buckets[-1][1]
    if total <= 0:
        return math.nan
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == math.inf:
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


def legend(fmt: str, labels: Labels) -> str:
    d = dict(labels)
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: d.get(m.group(1), ""), fmt) if fmt else (
        ",".join(f"{k}={v}" for k, v in labels if k != "__name__") or "value")
