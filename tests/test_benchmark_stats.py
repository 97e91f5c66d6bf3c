"""The statistics `benchmarks/quality.py` reports: the paired t interval and the exact sign-flip test."""

from __future__ import annotations

import importlib.util
import itertools
import json
import statistics
import types
from pathlib import Path

import pytest

QUALITY = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("quality_benchmark", QUALITY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sign_flip_p_is_the_share_of_sign_patterns_at_least_as_extreme(quality):
    gains = [5.1, -0.6, 0.8, 1.0, 4.1]
    observed = abs(statistics.fmean(gains))
    patterns = list(itertools.product((1, -1), repeat=len(gains)))
    extreme = sum(
        abs(statistics.fmean(s * abs(g) for s, g in zip(signs, gains))) >= observed - 1e-9 for signs in patterns
    )
    assert quality.sign_flip_p(gains) == pytest.approx(extreme / len(patterns))
    assert quality.sign_flip_p(gains) == pytest.approx(4 / 32)


def test_sign_flip_p_bounds(quality):
    assert quality.sign_flip_p([1.0] * 5) == pytest.approx(2 / 32)  # the smallest p 5 seeds can give
    assert quality.sign_flip_p([1.0] * 10) == pytest.approx(2 / 1024)
    assert quality.sign_flip_p([2.0, -2.0]) == pytest.approx(1.0)
    assert quality.sign_flip_p([1.0]) is None
    assert quality.sign_flip_p([1.0] * 21) is None


def test_paired_interval_uses_the_t_quantile_of_its_degrees_of_freedom(quality):
    gains = [5.1, -0.6, 0.8, 1.0, 4.1]
    half = 2.776 * statistics.stdev(gains) / 5**0.5
    mean = statistics.fmean(gains)
    assert quality.paired_interval(gains) == f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}]"
    assert quality.paired_interval([1.5]) == "+1.50 (1 seed: no interval)"


def test_distinct_bigrams_counts_repeats_at_a_fixed_bigram_count(quality):
    repeated = ["the film was good"] * 10  # 3 bigrams per row, the same 3 every row
    assert quality.distinct_bigrams(repeated, size=30) == pytest.approx(3 / 30)
    varied = [f"w{i} w{i + 1} w{i + 2} w{i + 3}" for i in range(0, 40, 4)]  # 30 bigrams, all distinct
    assert quality.distinct_bigrams(varied, size=30) == pytest.approx(1.0)
    assert quality.distinct_bigrams(varied, size=31) is None  # fewer bigrams than asked: no figure
    # case and punctuation are normalised away, as the deduplicator does
    assert quality.distinct_bigrams(["The film, was good!", "the FILM was good"], size=6) == pytest.approx(3 / 6)


def test_data_profile_leaves_out_the_seed_rows(quality):
    seed = [{"text": "A seed review, kept.", "label": 1}]
    added = [{"text": f"new review number {i} here", "label": i % 2} for i in range(3)]
    profile = quality.data_profile(seed + added, "text", {"a seed review kept"})
    assert profile["added_rows"] == 3
    assert profile["words"] == pytest.approx(5.0)
    assert profile["majority_label"] == pytest.approx(2 / 3)
    assert profile["distinct2"] is None  # 12 bigrams < the default size


def test_same_token_rows_buys_zerogen_rows_with_s3s_tokens(quality):
    assert quality.same_token_rows(31_967, 132.6) == 241
    assert quality.same_token_rows(100, 132.6) == 1  # never an empty training set
    assert quality.same_token_rows(None, 132.6) is None
    assert quality.same_token_rows(31_967, None) is None


@pytest.mark.parametrize(
    ("baselines", "message"),
    [(["zerogen_same_tokens"], "needs zerogen too"), (["zerogen", "zerogen_twice"], "unknown ['zerogen_twice']")],
)
def test_bad_baselines_are_refused_before_anything_runs(quality, tmp_path, capsys, baselines, message):
    with pytest.raises(SystemExit) as exit_info:
        quality.main(["--baselines", *baselines, "--out", str(tmp_path / "q"), "--report-only"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "q").exists()  # refused before the output folder is made


def test_merge_takes_only_the_task_seeds_this_folder_has_not_run(quality, tmp_path):
    def run(task, seed, test):
        return {"task": task, "seed": seed, "s3": {"test": test}}

    first, second = tmp_path / "first.json", tmp_path / "second.json"
    first.write_text(json.dumps([run("qnli", 1, 0.10), run("qnli", 2, 0.20), run("imdb", 3, 0.30)]))
    second.write_text(json.dumps([run("qnli", 2, 0.99), run("qnli", 4, 0.40)]))
    results = [run("qnli", 3, 0.33), run("qnli", 1, 0.11)]
    merged = quality.merge_results(results, [str(first), str(second)], ["qnli"])
    # this folder's seed 1 wins over the file's; the first file's seed 2 over the second's; imdb is not asked for
    assert [(r["seed"], r["s3"]["test"]) for r in results] == [(1, 0.11), (2, 0.20), (3, 0.33), (4, 0.40)]
    assert merged == {str(first): "qnli seed 2", str(second): "qnli seed 4"}


def test_merge_names_a_file_that_is_not_a_quality_json(quality, tmp_path):
    bad = tmp_path / "rows.json"
    bad.write_text(json.dumps([{"text": "a review", "label": 1}]))
    with pytest.raises(SystemExit, match="rows.json is not a quality.json"):
        quality.merge_results([], [str(bad)], ["qnli"])
    with pytest.raises(SystemExit, match="cannot read .*missing.json"):
        quality.merge_results([], [str(tmp_path / "missing.json")], ["qnli"])


def test_render_pairs_s3_with_the_equal_cost_baseline(quality):
    def method(test, rows, tokens):
        return {"rows": rows, "test": test, "tokens": tokens, "tokens_per_row": tokens / rows, "seconds": 1.0}

    results = [
        {
            "task": "imdb",
            "seed": seed,
            "s3": method(s3, 80, 32_000),
            "zerogen": method(0.74, 80, 10_600),
            "zerogen_same_tokens": method(z, 241, 32_000),
        }
        for seed, (s3, z) in enumerate([(0.76, 0.75), (0.78, 0.75), (0.75, 0.76)], start=1)
    ]
    table = quality.render(results)
    row = next(line for line in table.splitlines() if "s3 − zerogen_same_tokens" in line)
    assert "per seed +1.00, +3.00, -1.00" in row
    assert "+1.00 [" in row  # the mean paired difference, then its interval
    assert any(line.startswith("| imdb | zerogen_same_tokens | 241 |") for line in table.splitlines())


def test_render_rounds_marks_set_aside_rounds_and_the_final_model(quality):
    rounds = [
        {"round": 0, "validation": 0.73, "test": 0.74, "kept": True, "new_rows": 48},
        {"round": 1, "validation": 0.76, "test": 0.77, "kept": True, "new_rows": 20},
        {"round": 2, "validation": 0.70, "test": 0.69, "kept": False, "new_rows": 23},
    ]
    table = quality.render_rounds([{"task": "imdb", "seed": 3, "s3": {"rounds": rounds}}])
    assert "| imdb | 3 | 74.0 (73.0) → **77.0 (76.0)** → [69.0 (70.0)] | 48 + 20 + 23 |" in table


def test_paired_with_pairs_each_method_by_task_and_seed_only(quality):
    """``--paired-with``: this folder's score minus the other's on the same task and seed, per method; seeds or
    methods only one side has, and unscored runs, are left out."""

    def run(seed, s3, zerogen=None):
        out = {"task": "imdb", "seed": seed, "s3": {"test": s3}}
        if zerogen is not None:
            out["zerogen"] = {"test": zerogen}
        return out

    mine = [run(1, 0.78, 0.70), run(2, 0.72, 0.71), run(3, 0.77), run(4, 0.80, 0.60)]
    other = [run(2, 0.70, 0.71), run(1, 0.75, 0.70), run(3, 0.74, 0.69), run(5, 0.50, 0.50)]
    other[2]["s3"]["test"] = None  # seed 3 unscored on the other side
    table = quality.render_paired_with(mine, other, "q12")
    rows = {line.split(" | ")[1]: line for line in table.splitlines()[2:]}
    assert set(rows) == {"s3", "zerogen"}
    assert "+3.00, +2.00 (seeds 1, 2)" in rows["s3"] and rows["s3"].endswith("| 2 |")
    assert quality.paired_interval([3.0, 2.0]) in rows["s3"]
    assert "+0.00, +0.00 (seeds 1, 2)" in rows["zerogen"]
    assert "this − q12" in table.splitlines()[0]


def test_error_transfer_scores_each_row_set_with_the_seed_model_and_leaves_goldgens_seed_rows_out(
    tmp_path, monkeypatch
):
    """`benchmarks/error_transfer.py` on a run folder whose rows are labelled from the seed model's own predictions:
    errors (its predictions flipped) 0%, its seed rows 100%, S3's rows half flipped 50%, goldgen's new rows 100%
    (the seed rows inside goldgen's training file are not counted), and goldgen − s3 = +50 points; a second seed's
    goldgen_correct rows, half flipped, 50%, in a column the first seed (without them) leaves empty."""
    import json
    import random
    import shutil

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    monkeypatch.syspath_prepend(str(QUALITY.parent))  # error_transfer imports quality as the scripts do
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "scripts"))
    import error_transfer
    import tiny_setup

    run = tmp_path / "runs" / "imdb" / "seed1"
    model_dir = run / "s3" / "round_0" / "model"
    tiny = tiny_setup.make_models(tmp_path / "models")["cls"]
    model = AutoModelForSequenceClassification.from_pretrained(tiny).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    rng = random.Random(0)
    texts = [" ".join(rng.choice(tiny_setup.WORDS) for _ in range(rng.randint(4, 30))) for _ in range(40)]
    with torch.no_grad():
        encoded = tokenizer(texts, truncation=True, max_length=128, padding=True, return_tensors="pt")
        predicted = model(**encoded).logits.argmax(-1).tolist()
    right = [{"text": t, "label": p} for t, p in zip(texts, predicted)]
    wrong = [{"text": t, "label": 1 - p} for t, p in zip(texts, predicted)]
    files = {
        "errors/round_0.jsonl": wrong[:10],
        "data/seed.jsonl": right[10:20],
        "data/round_1.jsonl": right[20:25] + wrong[25:30],
        "goldgen/goldgen_train.jsonl": right[10:20] + right[30:40],
    }
    for name, rows in files.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    second = run.parent / "seed2"
    shutil.copytree(run, second)
    (second / "goldgen_correct").mkdir()
    (second / "goldgen_correct" / "goldgen_correct_train.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in right[10:20] + right[30:35] + wrong[35:40])
    )
    assert error_transfer.main(["--runs", str(tmp_path / "runs"), "--task", "imdb"]) == 0
    first, scored = json.loads((tmp_path / "runs" / "error_transfer.json").read_text())
    expected = {"errors": (10, 0.0), "seed": (10, 1.0), "s3": (10, 0.5), "goldgen": (10, 1.0)}
    assert {k: (v["rows"], v["accuracy"]) for k, v in first.items() if k != "run"} == expected
    assert {k: (v["rows"], v["accuracy"]) for k, v in scored.items() if k != "run"} == {
        **expected,
        "goldgen_correct": (10, 0.5),
    }
    table = (tmp_path / "runs" / "error_transfer.md").read_text()
    assert "| seed1 | 0.0 (10) | 50.0 (10) | 100.0 (10) | - | 100.0 (10) | +50.0 |" in table
    assert "| seed2 | 0.0 (10) | 50.0 (10) | 100.0 (10) | 50.0 (10) | 100.0 (10) | +50.0 |" in table


def test_gold_curve_trains_on_nested_rows_outside_the_pool_and_gold_sets(monkeypatch):
    """`benchmarks/gold_curve.py` compares sizes, so a smaller size's rows must be the first rows of a larger one,
    and no training row may be an error-pool (epoch selection), validation or test row, by content."""
    import datasets

    monkeypatch.syspath_prepend(str(QUALITY.parent))
    import gold_curve

    from s3_hf.tasks import get_task

    spec = get_task("imdb")
    train = datasets.Dataset.from_dict(
        {"text": [f"review number {i}" for i in range(60)], "label": [i % 2 for i in range(60)]}
    )
    held = [{"text": f"Review  NUMBER {i}", "label": 0} for i in range(0, 60, 3)]  # same text, other case/spacing

    monkeypatch.setattr("s3_hf.gold.load_gold", lambda task, source: {"train": train} if source == "gold-src" else {})

    class _Pipeline:
        def __init__(self):
            self.spec, self.config = spec, types.SimpleNamespace(gold="gold-src")

        def gold(self):
            return held[:5], held[5:10]

        def error_pool(self):
            return held[10:]

    small = gold_curve.training_rows(_Pipeline(), 10, seed=1)
    large = gold_curve.training_rows(_Pipeline(), 40, seed=1)
    assert large[:10] == small and len(large) == 40
    assert not {r["text"] for r in large} & {f"review number {i}" for i in range(0, 60, 3)}
    assert gold_curve.training_rows(_Pipeline(), 40, seed=2) != large  # the seed picks the rows
    with pytest.raises(SystemExit, match="only 40 training rows"):
        gold_curve.training_rows(_Pipeline(), 41, seed=1)

    by_seed = {
        s: {10: {"test": 0.5, "seconds": 1}, 40: {"test": 0.5 + g / 100, "seconds": 3}} for s, g in [(1, 2), (2, 4)]
    }
    table = gold_curve.render("imdb", by_seed, [10, 40])
    assert "| 40 | 53.00 ± 1.41 | 52.0, 54.0 | +3.00 [-9.71, +15.71] |" in table.replace("−", "-")


def test_description_audit_replays_cached_description_replies_through_the_validator(monkeypatch, tmp_path):
    """`benchmarks/description_audit.py` reads every description reply cached under a run folder (once per key,
    whatever the folder nesting), judges it with the current validator against the review its prompt showed, and
    groups the outcomes by the prefilled lead (the lead's words do not count as the model's)."""
    monkeypatch.syspath_prepend(str(QUALITY.parent))
    import description_audit

    from s3_hf.response_cache import ResponseCache

    review = "The plot dragged on for hours and the ending made no sense to anyone in the theatre at all."

    def put(cache, name, text, lead=None, stage="describe"):
        key = {"stage": stage, "error": name, **({"describe_lead": lead} if lead else {})}
        prompt = f"system <data> and </data>\nuser\n<data>\n{review}\n</data>\nDescribe it.\nassistant\n"
        request = {"key": key, "payload": {"prompt": prompt}}
        cache.put(name, {"text": text}, request=request)

    first, second = ResponseCache(tmp_path / "a" / "llm_cache"), ResponseCache(tmp_path / "b" / "deep" / "llm_cache")
    put(first, "k1", 'A slow film with a senseless ending, told with irritation."}')
    put(first, "k2", review + '"}')  # retells the review
    put(first, "k3", 'Horror film"}')  # a title
    put(first, "k4", '{"text": "a candidate"}', stage="extrapolate")  # not a description
    put(second, "k1", 'A slow film with a senseless ending, told with irritation."}')  # the same key again
    put(second, "k5", ' Amélie"}', lead="A negative review of")  # the lead alone is no description
    put(second, "k6", ' a slow film with a senseless ending."}', lead="A negative review of")
    by_lead = description_audit.audit(description_audit.description_replies([tmp_path]))
    assert by_lead == {
        "": {"ok": 1, "copied_summary": 1, "short_summary": 1},
        "A negative review of": {"short_summary": 1, "ok": 1},
    }
    table = description_audit.render(by_lead)
    assert "| (none) | 3 | 1 (33%) | 1 (33%) | 1 (33%) |" in table
    # the rounds' rows that talk about a review instead of being one; the seed's are not counted
    data = tmp_path / "a" / "data"
    data.mkdir()
    rows = ["The reviewer found it dull.", "A positive review of a warm film.", "I loved every minute of it."]
    (data / "round_1.jsonl").write_text("".join(json.dumps({"text": t, "label": 1}) + "\n" for t in rows))
    (data / "round_2.jsonl").write_text(json.dumps({"text": "This review is glowing.", "label": 1}) + "\n")
    (data / "seed.jsonl").write_text(json.dumps({"text": "The reviewer liked it.", "label": 1}) + "\n")
    pair = tmp_path / "b" / "data"  # a pair task's run has no review to read: left out
    pair.mkdir(parents=True)
    (pair / "round_1.jsonl").write_text(json.dumps({"text1": "A review of it.", "text2": "Why?", "label": 0}) + "\n")
    assert description_audit.rows_about_a_review([tmp_path]) == [(str(tmp_path / "a"), 4, 3)]


@pytest.fixture
def gate_replay(monkeypatch):
    """`benchmarks/gate_replay.py`: the round gate's rules replayed over recorded round scores."""
    monkeypatch.syspath_prepend(str(QUALITY.parent))
    import gate_replay

    return gate_replay


def _rounds(*scores, kept=None):
    kept = kept or [True] * len(scores)
    return [{"validation": v, "test": t, "kept": k} for (v, t), k in zip(scores, kept)]


def test_a_last_round_tie_is_replayed_under_both_rules(gate_replay):
    rounds = _rounds((0.59, 0.620), (0.75, 0.754), (0.75, 0.728))  # demo seed 42 at e217821
    strict = gate_replay.replay_final(rounds, "validation")
    assert strict == {"test": 0.754, "replayable": True, "decisions": [True, True, False]}
    assert gate_replay.replay_final(rounds, "validation_or_tie")["test"] == 0.728


def test_an_earlier_tie_is_not_replayable_when_the_rule_changes_it(gate_replay):
    rounds = _rounds((0.70, 0.60), (0.70, 0.65), (0.72, 0.66))
    assert gate_replay.replay_final(rounds, "validation") == {
        "test": None, "replayable": False, "decisions": [True, False]
    }  # fmt: skip
    assert gate_replay.replay_final(rounds, "validation_or_tie")["test"] == 0.66


def test_a_round_the_run_set_aside_stays_aside_and_the_best_is_the_kept_rounds(gate_replay):
    # round 1 fell and was set aside by the run; round 2 ties the seed, not round 1
    rounds = _rounds((0.52, 0.48), (0.515, 0.49), (0.52, 0.522), kept=[True, False, True])
    assert gate_replay.replay_final(rounds, "validation")["test"] == 0.48
    assert gate_replay.replay_final(rounds, "validation_or_tie")["test"] == 0.522


def test_round_gains_compare_each_round_with_the_best_kept_round_before_it(gate_replay):
    # round 1 set aside (validation -1): round 2 is compared with the seed, round 3 with round 2
    rounds = _rounds((0.70, 0.70), (0.69, 0.71), (0.705, 0.68), (0.73, 0.74), kept=[True, False, True, True])
    gains = [(round(v, 2), round(t, 2)) for v, t in gate_replay.round_gains(rounds)]
    assert gains == [(-1.0, 1.0), (0.5, -2.0), (2.5, 6.0)]
    text = "\n".join(gate_replay.gain_rows(gate_replay.round_gains(rounds)))
    assert "| ≤ 0 (set aside) | 1 | +1.00 | 0 |" in text and "| 0 to 1 | 1 | -2.00 | 1 |" in text
    assert "| 1 to 2 | 0 | - | 0 |" in text and "| > 2 | 1 | +6.00 | 0 |" in text


def test_quality_rows_pair_each_rule_with_the_baselines(gate_replay, tmp_path):
    results = [
        {"task": "imdb", "seed": seed, "s3": {"rounds": _rounds((0.6, 0.60), (0.7, 0.70), (0.7, last))},
         "zerogen": {"test": 0.65}}
        for seed, last in ((1, 0.68), (2, 0.72))
    ]  # fmt: skip
    path = tmp_path / "quality.json"
    path.write_text(json.dumps(results))
    text = "\n".join(gate_replay.quality_rows(path))
    assert "| `validation` | zerogen | +5.00 [+5.00, +5.00] | 0.500 | +5.00, +5.00 |" in text
    assert "| `validation_or_tie` | zerogen | +5.00 [-20.41, +30.41] | 0.500 | +3.00, +7.00 |" in text


def test_extrapolation_cost_runs_each_variant_at_each_k_once(monkeypatch, tmp_path):
    """`benchmarks/extrapolation_cost.py --k 1 2`: every variant at each k on the same errors, one row and one row
    file per (variant, k); ``v3`` has its own k (1) and runs once. Against the loopback OpenAI server."""
    monkeypatch.syspath_prepend(str(QUALITY.parent))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    import extrapolation_cost

    from s3_hf.testing.openai_server import FakeOpenAIServer

    out = tmp_path / "cost"
    argv = ["--errors", "2", "--k", "1", "2", "--variants", "describe_labelled", "v3", "--out", str(out)]
    with FakeOpenAIServer() as server:
        assert extrapolation_cost.main([*argv, "--base-url", server.url, "--model", "fake"]) == 0
    assert sorted(p.name for p in out.glob("*.jsonl")) == [
        "describe_labelled_k1.jsonl",
        "describe_labelled_k2.jsonl",
        "v3_k1.jsonl",
    ]
    table = (out / "extrapolation_cost.md").read_text()
    variants = [line.split(" | ")[0].lstrip("| ") for line in table.splitlines()[4:]]
    assert variants == ["seed", "describe_labelled k=1", "v3 k=1", "describe_labelled k=2"]
    header = table.splitlines()[2].split(" | ")
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in table.splitlines()[4:]}
    accepted, writing = header.index("accepted"), header.index("tokens per accepted row, writing only")
    k1, k2 = rows["describe_labelled k=1"], rows["describe_labelled k=2"]
    assert int(k2[accepted]) > int(k1[accepted])  # twice the candidates for the same descriptions
    kept_lines = (out / "describe_labelled_k2.jsonl").read_text().splitlines()
    assert len(kept_lines) == int(k2[accepted]) and all("kept" in json.loads(line) for line in kept_lines)
    assert int(k2[writing]) < int(k1[writing])  # a description's tokens are spread over more candidates


def test_extrapolation_cost_compares_shared_prompt_calls_side_by_side(monkeypatch, tmp_path):
    """`--shared-prompt-calls both`: one engine asks each error's k candidates one call each, the other in one call
    with n; same rows accepted, fewer calls and fewer tokens per row with shared calls, and a ratio line."""
    monkeypatch.syspath_prepend(str(QUALITY.parent))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    import extrapolation_cost

    from s3_hf.testing.openai_server import FakeOpenAIServer

    out = tmp_path / "shared"
    argv = ["--errors", "4", "--k", "2", "--variants", "describe_labelled", "--shared-prompt-calls", "both"]
    with FakeOpenAIServer() as server:
        assert extrapolation_cost.main([*argv, "--out", str(out), "--base-url", server.url, "--model", "fake"]) == 0
    table = (out / "extrapolation_cost.md").read_text().splitlines()
    header = table[2].split(" | ")
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in table[4:] if ": " in line}
    off = rows["shared prompt calls off: describe_labelled"]
    on = rows["shared prompt calls on: describe_labelled"]
    calls, accepted = header.index("API calls (retries by reason)"), header.index("accepted")
    writing = header.index("tokens per accepted row, writing only")
    assert int(on[accepted]) == int(off[accepted]) == 8
    assert int(on[calls].split()[0]) == 8 and int(off[calls].split()[0]) == 12  # 4 descriptions + 4 or 8 calls
    assert int(on[writing]) < int(off[writing])
    assert "| variant | s generation + verification, shared prompt calls on / off |" in table
    assert (out / "shared_prompt_calls_on_describe_labelled.jsonl").exists()


def test_replayed_tokens_counts_replayed_replies_at_their_cached_usage(monkeypatch, tmp_path):
    """`benchmarks/replayed_tokens.py`: a run from a copied cache pays only its own calls; its fresh cost adds the
    replayed replies back: whole stages and fully asked rounds from the cache, other rounds as own calls plus
    replayed calls at the round's mean; ZeroGen's entries are not S3's."""
    monkeypatch.syspath_prepend(str(QUALITY.parent))
    import replayed_tokens

    from s3_hf.response_cache import ResponseCache

    cache = ResponseCache(tmp_path / "llm_cache")

    def put(name, stage, round_index, prompt, completion):
        usage = {"prompt_tokens": prompt, "completion_tokens": completion}
        cache.put(name, {"text": "x", "usage": usage}, request={"stage": stage, "round": round_index})

    def usage(stage, round_index, requests, cached, prompt):
        keys = ("stage", "round_index", "requests", "cached_requests", "prompt_tokens", "completion_tokens")
        return dict(zip(keys, (stage, round_index, requests, cached, prompt, 0)))

    put("s1", "seed", 0, 10, 5)
    put("s2", "rationales", 0, 4, 1)
    put("z1", "zerogen", 0, 100, 100)
    put("a1", "extrapolate", 1, 20, 10)  # round 1: every entry asked (2 replayed + 1 own)
    put("a2", "extrapolate", 1, 20, 10)
    put("a3", "extrapolate", 1, 30, 0)
    put("b1", "extrapolate", 2, 40, 0)  # round 2: 1 replayed, 1 own, 1 the copied run's only
    put("b2", "extrapolate", 2, 60, 0)
    put("b3", "extrapolate", 2, 50, 0)
    rows = [usage("seed", 0, 0, 1, 0), usage("zerogen", 0, 1, 0, 9)]
    rows += [usage("extrapolate", 1, 1, 2, 30), usage("extrapolate", 2, 1, 1, 50)]
    (tmp_path / "llm_usage.json").write_text(json.dumps({"rows": rows}))
    rounds = {  # round 2 set aside: accepted, not trained on
        "0": {"new_rows": 4, "train_rows": 4},
        "1": {"new_rows": 3, "train_rows": 7, "round_kept": True},
        "2": {"new_rows": 2, "train_rows": 9, "round_kept": False},
    }
    (tmp_path / "state.json").write_text(json.dumps({"s3": {"rounds": rounds}}))
    result = replayed_tokens.run_tokens(tmp_path)
    # seed stage 15 + 5, round 1: 30 + 30 + 30, round 2: own 50 + 1 replayed at the mean of 40, 60, 50
    assert result == {"tokens": 20 + 90 + 50 + 50, "estimated_calls": 1, "rows": 7, "accepted": 9}
    # no llm_usage.json (a run killed before the file was kept current): the cache is the run's own, every S3 entry
    (tmp_path / "llm_usage.json").unlink()
    result = replayed_tokens.run_tokens(tmp_path)
    assert result == {"tokens": 20 + 90 + 150, "estimated_calls": 0, "rows": 7, "accepted": 9}


def test_difficulty_prompts_extrapolates_the_same_errors_with_each_variant_and_scores_the_kept_rows(
    tmp_path, monkeypatch
):
    """`benchmarks/difficulty_prompts.py` against the loopback OpenAI server: per seed, the same label-balanced
    errors go to every variant (the misleading prompts name the label the model gave each error, the shipped ones do
    not), each variant's kept rows are written, and the accuracy reported is the seed model's on exactly those
    rows; the errors score 0% (they are its errors)."""
    import random

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    monkeypatch.syspath_prepend(str(QUALITY.parent))
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "scripts"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    import difficulty_prompts
    import tiny_setup
    from error_transfer import accuracy

    from s3_hf.testing.openai_server import FakeOpenAIServer

    run = tmp_path / "runs" / "imdb" / "seed1"
    model_dir = run / "s3" / "round_0" / "model"
    tiny = tiny_setup.make_models(tmp_path / "models")["cls"]
    model = AutoModelForSequenceClassification.from_pretrained(tiny).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    rng = random.Random(0)
    texts = [" ".join(rng.choice(tiny_setup.WORDS) for _ in range(rng.randint(6, 20))) for _ in range(40)]
    with torch.no_grad():  # shift the head's bias to the median margin, so that it predicts both labels
        encoded = tokenizer(texts, truncation=True, max_length=128, padding=True, return_tensors="pt")
        logits = model(**encoded).logits
        head = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == 2][-1]
        head.bias[1] -= (logits[:, 1] - logits[:, 0]).median()
        predicted = model(**encoded).logits.argmax(-1).tolist()
    model.save_pretrained(model_dir)
    errors = [{"text": t, "label": 1 - p, "predicted_label": p} for t, p in zip(texts, predicted)]
    errors = [e for e in errors if e["label"] == 0][:4] + [e for e in errors if e["label"] == 1][:4]
    assert len(errors) == 8, "the tiny model predicts one label only: pick other texts"
    (run / "errors").mkdir(parents=True)
    (run / "errors" / "round_0.jsonl").write_text("".join(json.dumps(e) + "\n" for e in errors))

    out = tmp_path / "out"
    argv = ["--runs", str(tmp_path / "runs"), "--seeds", "1", "--errors", "4", "--k", "1", "--out", str(out)]
    with FakeOpenAIServer() as server:
        assert difficulty_prompts.main([*argv, "--base-url", server.url, "--model", "fake"]) == 0
        described = [entry["user"] for entry in server.log if "In one or two sentences" in entry["user"]]
    misleading = [text for text in described if "it took it for" in text]
    assert len(described) == 8 and len(misleading) == 4  # 4 errors, once per variant
    assert sum("took it for positive" in text for text in misleading) == 2  # the 2 negative errors
    (scored,) = json.loads((out / "difficulty_prompts.json").read_text())
    assert scored["errors"] == 4 and scored["errors_accuracy"] == 0.0
    for variant in ("shipped", "misleading"):
        rows = [json.loads(line) for line in (out / f"seed1_{variant}.jsonl").read_text().splitlines()]
        assert len(rows) == scored[variant]["kept"] <= scored[variant]["checked"] <= 4
        assert scored[variant]["accuracy"] == accuracy(model, tokenizer, rows, "text", 128)
    table = (out / "difficulty_prompts.md").read_text()
    assert "| seed1 | 4 (0%) |" in table and "misleading − shipped" in table


def test_training_steps_retrains_the_runs_rows_with_its_recipe_at_each_epoch_count_and_resumes(tmp_path, monkeypatch):
    """`benchmarks/training_steps.py`: per seed folder, the rows and the run's recipe (gold sizes, seed, learning
    rate) go to ``S3Pipeline.train_and_evaluate`` once per epoch count; a rerun reads the saved results; the table
    pairs each count with the first."""
    monkeypatch.syspath_prepend(str(QUALITY.parent))
    import training_steps

    from s3_hf.pipeline import S3Pipeline

    rows = [{"text": f"A review number {i}, fine or not.", "label": i % 2} for i in range(6)]
    for seed in (1, 2):
        run = tmp_path / "runs" / "imdb" / f"seed{seed}"
        (run / "data").mkdir(parents=True)
        (run / "data" / "seed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[: 4 + seed]))
        recipe = {"task": "imdb", "seed": seed, "validation_size": 30, "test_size": 40, "learning_rate": 3e-4}
        (run / "s3_run_config.json").write_text(json.dumps({**recipe, "epochs": 6.0, "output_dir": "elsewhere"}))
    calls = []

    def train_and_evaluate(self, examples, name):
        c = self.config
        calls.append((c.seed, c.epochs, len(examples), c.validation_size, c.test_size, c.learning_rate, name))
        return {"test": 0.5 + c.epochs / 100 + c.seed / 1000, "best_epoch": 2.0}

    monkeypatch.setattr(S3Pipeline, "train_and_evaluate", train_and_evaluate)
    argv = ["--runs", str(tmp_path / "runs"), "--seeds", "1", "2", "--epochs", "6", "24", "--out", str(tmp_path / "o")]
    assert training_steps.main(argv) == 0
    assert sorted(calls) == [
        (1, 6.0, 5, 30, 40, 3e-4, "epochs_6"),
        (1, 24.0, 5, 30, 40, 3e-4, "epochs_24"),
        (2, 6.0, 6, 30, 40, 3e-4, "epochs_6"),
        (2, 24.0, 6, 30, 40, 3e-4, "epochs_24"),
    ]
    assert training_steps.main(argv) == 0 and len(calls) == 4  # resumed from the saved results
    table = (tmp_path / "o" / "training_steps.md").read_text()
    assert "| 24 | 74.15 ± 0.07 | 74.1 (2.0), 74.2 (2.0) | +18.00 [+18.00, +18.00] | 0.500 |" in table


def test_prefix_reuse_replays_a_shared_prompt_call_once_with_its_n(monkeypatch, tmp_path):
    """A run's cache records the replies of a shared-prompt call with ``choice`` / ``choices``;
    `benchmarks/prefix_reuse.py` replays that call once, with ``n``, not once per reply."""
    monkeypatch.syspath_prepend(str(QUALITY.parent))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    import prefix_reuse

    from s3_hf.llm_engine import GenerationRequest, LLMConfig, LLMEngine
    from s3_hf.response_cache import ResponseCache
    from s3_hf.testing.openai_server import FakeOpenAIServer

    def request(error: int, sample: int) -> GenerationRequest:
        return GenerationRequest(
            messages=[{"role": "user", "content": f"error {error}"}],
            validate=lambda obj: ({"text": obj["text"], "label": 1}, None),
            key={"error": error, "sample": sample},
            affinity=f"error-{error}",
            prefill='{"text": "',
        )

    cache = tmp_path / "run" / "llm_cache"
    with FakeOpenAIServer() as server:
        config = LLMConfig(
            base_url=server.url, model="fake", seed=3, cache_dir=str(cache), prefill_mode="completions", progress=False
        )
        with LLMEngine(config) as engine:
            engine.generate([request(e, s) for e in range(3) for s in range(2)] + [request(9, 0)], stage="x")
        made = [entry["body"] for entry in server.log]
    records = [r["request"] for r in ResponseCache(cache).records()]
    shared = [(r.get("choice", -1), r.get("choices", 1)) for r in records]
    assert sorted(shared) == [(-1, 1)] + [(0, 2)] * 3 + [(1, 2)] * 3
    calls = prefix_reuse.load_calls(tmp_path / "run", None)
    assert sorted(c.get("n", 1) for c in calls) == sorted(b.get("n", 1) for b in made) == [1, 2, 2, 2]
