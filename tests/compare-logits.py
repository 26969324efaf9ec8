#!/usr/bin/python3
"""Compares `resnet classify --format json --logits` output with PyTorch.

    compare-logits.py [options] <expected.json> <actual.jsonl>

<expected.json> is what make-fixtures.py writes; <actual.jsonl> has one
JSON object per image, in the same order. For each image it checks:
  - every logit within rtol * max|PyTorch logit| of PyTorch's (rtol 1e-4);
  - "top" has min(k, n_classes) entries, each "prob" equal to the softmax
    of the tool's own logits within 1e-6 and in non-increasing order;
  - the top-k order is PyTorch's, except where PyTorch's logits are within
    the tolerance of each other (a tie the tolerance cannot resolve);
  - with --labels, each "label" is that line of the label file.
Options:
  --top <k>           the -k given to classify (default 5)
  --rtol <r>          relative tolerance for the logits (default 1e-4)
  --labels <file>     class names, one per line
  --top1-exact        the top-1 class must be PyTorch's, ties or not
  --subset            the output covers some of the expected images, in
                      their order
  --truth <csv>       file,label_index rows: report both top-1 accuracies
  --accuracy <pct>    with --truth, fail unless ours rounds to <pct>
  --name <s>          what to call this set in messages
Prints one line per image, then the largest relative difference; exits 1
when any check fails. Needs only the Python standard library.
"""

import csv
import json
import math
import sys

PROB_TOL = 1e-6


class Checker:
    def __init__(self, opts):
        self.opts = opts
        self.n_fail = 0
        self.worst = (-1.0, "", 0, 0.0, 0.0)  # rel, file, index, exp, got

    def fail(self, msg):
        print("FAIL: %s: %s" % (self.opts["name"], msg), file=sys.stderr)
        self.n_fail += 1

    def check_logits(self, name, want, got):
        """Returns the largest |difference| relative to max|want|."""
        if not isinstance(got, list) or len(got) != len(want):
            self.fail("%s: expected %d logits, got %s"
                      % (name, len(want), describe_len(got)))
            return None
        scale = max(abs(v) for v in want)
        diffs = [abs(float(g) - w) for g, w in zip(got, want)]
        i = max(range(len(diffs)), key=lambda j: diffs[j])
        rel = diffs[i] / scale if scale > 0 else diffs[i]
        if rel > self.worst[0]:
            self.worst = (rel, name, i, want[i], float(got[i]))
        if not rel <= self.opts["rtol"]:
            self.fail("%s: logit %d differs: expected %.9g, got %.9g "
                      "(|diff| %.3g = %.3g x max|logit|, allowed %g)"
                      % (name, i, want[i], float(got[i]), diffs[i], rel,
                         self.opts["rtol"]))
        return rel

    def check_top(self, name, want, got_logits, top):
        n = len(want)
        k = min(self.opts["top"], n)
        if not isinstance(top, list) or len(top) != k:
            self.fail("%s: expected %d top entries, got %s"
                      % (name, k, describe_len(top)))
            return
        tol = self.opts["rtol"] * max(abs(v) for v in want)
        probs = softmax([float(v) for v in got_logits])
        order = sorted(range(n), key=lambda j: -want[j])
        seen = set()
        last = math.inf
        for pos, entry in enumerate(top):
            idx, prob = entry.get("index"), entry.get("prob")
            if not isinstance(idx, int) or not 0 <= idx < n or idx in seen:
                self.fail("%s: top[%d]: bad or repeated index %r"
                          % (name, pos, idx))
                return
            seen.add(idx)
            if not isinstance(prob, (int, float)) or \
                    not abs(prob - probs[idx]) <= PROB_TOL:
                self.fail("%s: top[%d] (class %d): prob %r, softmax of the "
                          "logits gives %.9g" % (name, pos, idx, prob,
                                                 probs[idx]))
            elif prob > last:
                self.fail("%s: top[%d]: prob %.9g above the previous %.9g"
                          % (name, pos, prob, last))
            else:
                last = prob
            if idx != order[pos] and abs(want[idx] - want[order[pos]]) > tol:
                self.fail("%s: top[%d] is class %d (PyTorch logit %.9g), "
                          "PyTorch ranks class %d (%.9g) there"
                          % (name, pos, idx, want[idx], order[pos],
                             want[order[pos]]))
            if self.opts["top1_exact"] and pos == 0 and idx != order[0]:
                self.fail("%s: top-1 is class %d, PyTorch's is %d"
                          % (name, idx, order[0]))
            labels = self.opts["labels"]
            if labels is not None and entry.get("label") != labels[idx]:
                self.fail("%s: top[%d] (class %d): label %r, expected %r"
                          % (name, pos, idx, entry.get("label"),
                             labels[idx]))


def describe_len(x):
    return "%d" % len(x) if isinstance(x, list) else "%r" % (x,)


def softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    s = sum(e)
    return [v / s for v in e]


def same_file(want, got):
    """The output names the file as given; expected names may be bare."""
    return got == want or got.endswith("/" + want)


def read_actual(chk, path):
    rows = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not an object")
            except ValueError as e:
                chk.fail("%s:%d: not a JSON object (%s): %.80s"
                         % (path, lineno, e, line))
                row = {}
            rows.append(row)
    return rows


def pick(expected, actual):
    """The expected images the output names, keeping their order."""
    picked = []
    rest = iter(expected)
    for got in actual:
        for want in rest:
            if same_file(want["file"], str(got.get("file"))):
                picked.append(want)
                break
    return picked


def accuracy(chk, truth_path, files, ours, theirs):
    truth = {}
    with open(truth_path) as f:
        for row in csv.DictReader(f):
            truth[row["file"]] = int(row["label_index"])
    labels = []
    for f in files:
        match = [v for k, v in truth.items() if same_file(k, f)]
        if len(match) != 1:
            chk.fail("no single label for '%s' in '%s'" % (f, truth_path))
            return
        labels.append(match[0])
    n = len(labels)
    ok_ours = sum(a == b for a, b in zip(ours, labels))
    ok_theirs = sum(a == b for a, b in zip(theirs, labels))
    print("%s: top-1 accuracy: ours %.1f %% (%d/%d), PyTorch %.1f %% (%d/%d)"
          % (chk.opts["name"], 100.0 * ok_ours / n, ok_ours, n,
             100.0 * ok_theirs / n, ok_theirs, n))
    want = chk.opts["accuracy"]
    if want is not None and "%.1f" % (100.0 * ok_ours / n) != "%.1f" % want:
        chk.fail("accuracy %.1f %%, expected %.1f %%"
                 % (100.0 * ok_ours / n, want))


def parse_args(argv):
    opts = {"top": 5, "rtol": 1e-4, "labels": None, "top1_exact": False,
            "subset": False, "truth": None, "accuracy": None, "name": None}
    args = []
    i = 1
    while i < len(argv):
        a = argv[i]
        if a == "--top1-exact":
            opts["top1_exact"] = True
        elif a == "--subset":
            opts["subset"] = True
        elif a in ("--top", "--rtol", "--labels", "--truth", "--accuracy",
                   "--name") and i + 1 < len(argv):
            i += 1
            v = argv[i]
            key = a[2:]
            if key == "top":
                opts[key] = int(v)
            elif key in ("rtol", "accuracy"):
                opts[key] = float(v)
            elif key == "labels":
                with open(v) as f:
                    opts[key] = f.read().splitlines()
            else:
                opts[key] = v
        elif a.startswith("--"):
            sys.exit("compare-logits: unknown option '%s'" % a)
        else:
            args.append(a)
        i += 1
    if len(args) != 2:
        sys.exit("usage: compare-logits.py [options] <expected.json> "
                 "<actual.jsonl>")
    if opts["name"] is None:
        opts["name"] = args[0]
    return opts, args


def main(argv):
    opts, (exp_path, act_path) = parse_args(argv)
    chk = Checker(opts)
    with open(exp_path) as f:
        expected = json.load(f)["images"]
    actual = read_actual(chk, act_path)
    if opts["subset"]:
        expected = pick(expected, actual)
    if len(actual) != len(expected):
        chk.fail("expected %d result lines, got %d"
                 % (len(expected), len(actual)))
    if not expected:
        chk.fail("no images to compare")

    ours, theirs, files = [], [], []
    for want, got in zip(expected, actual):
        name = want["file"]
        if not same_file(name, str(got.get("file"))):
            chk.fail("result for %r where %r was expected (order?)"
                     % (got.get("file"), name))
            continue
        rel = chk.check_logits(name, want["logits"], got.get("logits"))
        if rel is None:
            continue
        chk.check_top(name, want["logits"], got["logits"], got.get("top"))
        print("%s: %s: max relative difference %.3g"
              % (opts["name"], name, rel))
        top = got.get("top") or [{}]
        files.append(name)
        ours.append(top[0].get("index"))
        theirs.append(max(range(len(want["logits"])),
                          key=lambda j: want["logits"][j]))

    if opts["truth"]:
        accuracy(chk, opts["truth"], files, ours, theirs)
    rel, name, i, e, g = chk.worst
    if rel >= 0:
        print("%s: largest relative difference %.3g at %s logit %d "
              "(expected %.9g, got %.9g)" % (opts["name"], rel, name, i, e, g))
    if chk.n_fail:
        print("%s: %d check(s) failed" % (opts["name"], chk.n_fail),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
