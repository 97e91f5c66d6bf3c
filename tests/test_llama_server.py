"""s3_hf.llama_server: llama-cpp-python's logprobs computed in numpy give the same answers as its own code."""

from __future__ import annotations

import numpy as np
import pytest

from s3_hf import llama_server
from s3_hf.llama_server import TOP, LazyLogprobRows, top_sorted


def full_top(row: np.ndarray, k: int) -> list:
    return sorted(zip(row, range(len(row))), reverse=True)[:k]


def test_top_sorted_gives_the_full_sorts_best_pairs_in_its_order():
    rng = np.random.default_rng(0)
    row = rng.normal(size=5000).astype(np.single)
    row[[3, 70, 900]] = row.max() + 1.0  # a three-way tie at the top: the full sort puts the larger token id first
    row[11] = -np.inf
    fast = top_sorted(zip(row, range(len(row))), reverse=True)
    assert len(fast) == TOP
    assert fast == full_top(row, TOP)
    assert [i for _, i in fast[:3]] == [900, 70, 3]
    assert all(type(value) is np.float32 and type(i) is int for value, i in fast)


@pytest.mark.parametrize(
    "make, kwargs",
    [
        (lambda row: zip(row.tolist(), range(len(row))), {"reverse": True}),  # a list, not a numpy row
        (lambda row: zip(row, range(len(row))), {}),  # ascending
        (lambda row: zip(row, range(len(row))), {"reverse": True, "key": lambda pair: -pair[1]}),
        (lambda row: zip(row, range(1, len(row) + 1)), {"reverse": True}),  # not the row's own token ids
        (lambda row: zip(row[: 4 * TOP], range(4 * TOP)), {"reverse": True}),  # too short to be worth it
        (lambda row: [(1.0, 0), (3.0, 1), (2.0, 2)], {"reverse": True}),
    ],
)
def test_top_sorted_is_the_builtin_sort_for_anything_else(make, kwargs):
    row = np.random.default_rng(1).normal(size=3000).astype(np.single)
    assert top_sorted(make(row), **kwargs) == sorted(make(row), **kwargs)


def test_top_sorted_is_the_builtin_sort_for_an_advanced_zip():
    row = np.random.default_rng(2).normal(size=3000).astype(np.single)
    pairs = zip(row, range(len(row)))
    next(pairs)
    expected = zip(row, range(len(row)))
    next(expected)
    assert top_sorted(pairs, reverse=True) == sorted(expected, reverse=True)


def test_lazy_rows_are_the_original_functions_rows():
    llama_cpp = pytest.importorskip("llama_cpp")
    original = llama_cpp.Llama.logits_to_logprobs
    logits = np.random.default_rng(3).normal(size=(7, 300)).astype(np.single)
    whole = original(logits)
    lazy = LazyLogprobRows(logits, original)
    assert len(lazy) == 7 and len(lazy[4:]) == 3
    np.testing.assert_array_equal(lazy[2], whole[2])
    for got, want in zip(lazy[4:], whole[4:]):
        np.testing.assert_array_equal(got, want)


@pytest.mark.llm
@pytest.mark.slow
def test_patched_llama_answers_logprob_requests_as_the_original(monkeypatch):
    """A real (tiny) model: the same text and the same top alternatives with the same values, patched or not; and
    the pinned llama-cpp-python still has the code the patch replaces (a new version that changed it fails here)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from s3_hf.assets import AssetError, gguf_path

    try:
        path = gguf_path("smollm2")
    except AssetError as err:
        pytest.skip(f"tiny GGUF not installed: {err}")
    assert llama_server.applicable()
    model = llama_cpp.Llama(str(path), n_ctx=512, n_threads=1, logits_all=True, verbose=False)
    prompts = [
        '<|im_start|>user\nIs "I hated every minute." positive or negative?<|im_end|>\n<|im_start|>assistant\n{"label": "',
        '<|im_start|>user\nIs "A warm, funny film." positive or negative?<|im_end|>\n<|im_start|>assistant\n{"label": "',
    ]

    def answers():
        out = []
        for prompt in prompts:
            for echo in (False, True):
                choice = model.create_completion(prompt, max_tokens=3, temperature=0.0, logprobs=5, echo=echo)
                out.append((choice["choices"][0]["text"], choice["choices"][0]["logprobs"]))
        return out

    expected = answers()
    rows_sorted_fast = []
    whole_row = llama_server._whole_row
    monkeypatch.setattr(
        llama_server, "_whole_row", lambda pairs: rows_sorted_fast.append(whole_row(pairs)) or rows_sorted_fast[-1]
    )
    try:
        assert llama_server.apply()
        got = answers()
    finally:
        llama_server.remove()
    assert not hasattr(llama_cpp.llama, "sorted")
    assert got == expected
    assert rows_sorted_fast and all(row is not None for row in rows_sorted_fast)  # every sort took the fast path
    assert any(len(top) == 5 for _, logprobs in got for top in logprobs["top_logprobs"] if top is not None)


def test_prefix_reuse_flag_is_taken_out_of_the_server_arguments():
    """--prefix_reuse True|False is ours: taken out before llama-cpp-python's parser sees it; default False."""
    pop = llama_server._pop_prefix_reuse
    assert pop(["--model", "m.gguf"]) == (False, ["--model", "m.gguf"])
    assert pop(["--prefix_reuse", "True", "--port", "1"]) == (True, ["--port", "1"])
    assert pop(["--port", "1", "--prefix_reuse", "False"]) == (False, ["--port", "1"])
    with pytest.raises(SystemExit, match="--prefix_reuse takes True or False, got 'yes'"):
        pop(["--prefix_reuse", "yes"])


def test_local_server_command_asks_for_whole_prompts_unless_prefix_reuse(tmp_path):
    from s3_hf.local_llm import LocalLLMServer

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"")

    def flag(**kwargs):
        command = LocalLLMServer(str(gguf), **kwargs).command(8000)
        return command[command.index("--prefix_reuse") + 1] if "--prefix_reuse" in command else None

    assert flag() == "False" and flag(prefix_reuse=True) == "True"
    assert flag(fast_logprobs=False) is None  # llama_cpp.server as installed knows no such flag (and always reuses)


def tiny_llama(monkeypatch):
    """``(llama_cpp, a tiny real model, evals)``: ``evals`` gets the token count of every ``Llama.eval`` call (the
    first of a request is its prompt's); skips where llama-cpp-python or the tiny GGUF is missing."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from s3_hf.assets import AssetError, gguf_path

    try:
        path = gguf_path("smollm2")
    except AssetError as err:
        pytest.skip(f"tiny GGUF not installed: {err}")
    model = llama_cpp.Llama(str(path), n_ctx=512, n_threads=1, verbose=False)
    evals: list[int] = []
    original_eval = llama_cpp.llama.Llama.eval

    def eval_(self, tokens):
        evals.append(len(tokens))
        return original_eval(self, tokens)

    monkeypatch.setattr(llama_cpp.llama.Llama, "eval", eval_)
    return llama_cpp, model, evals


@pytest.mark.llm
@pytest.mark.slow
def test_whole_prompts_make_a_reply_independent_of_the_previous_request(monkeypatch):
    """A real (tiny) model: with apply_whole_prompts every prompt is evaluated from its first token (llama-cpp-python
    alone evaluates only what differs from the previous prompt), and a sampled reply to a request is the same
    whichever request came before it."""
    llama_cpp, model, evals = tiny_llama(monkeypatch)
    head = "<|im_start|>user\nWrite one sentence of a negative review of "
    x, y = head + "a slow thriller.<|im_end|>\n<|im_start|>assistant\n", head + "a loud comedy.<|im_end|>\n"

    def ask(prompt):
        evals.clear()
        reply = model.create_completion(prompt, max_tokens=24, temperature=0.8, seed=7)["choices"][0]["text"]
        return reply, evals[0]

    original_generate = llama_cpp.llama.Llama.generate
    n_x = len(model.tokenize(x.encode(), special=True))
    ask(y)
    _, evaluated = ask(x)
    assert evaluated < n_x  # as installed: the prefix shared with y is reused
    try:
        llama_server.apply_whole_prompts()
        alone, evaluated = ask(x)
        assert evaluated == n_x
        ask(y)
        after_y, evaluated = ask(x)
        assert evaluated == n_x and after_y == alone
    finally:
        llama_server.remove_whole_prompts()
    assert llama_cpp.llama.Llama.generate is original_generate and "generate" not in llama_server._ORIGINAL


def test_completion_requests_with_n_get_n_choices_and_others_the_model():
    """apply_choices: llama-cpp-python's handler drops n; a completion body with n > 1 is answered by
    CompletionChoices, anything else by the model itself."""
    pytest.importorskip("llama_cpp.server.app")
    import llama_cpp.server.app as app
    from llama_cpp.server.types import CreateChatCompletionRequest, CreateCompletionRequest

    model = object()

    def prepare(body, kwargs=None):
        return app.prepare_request_resources(body, lambda _: model, None, kwargs or {})

    llama_server.apply_choices()
    try:
        llama_server.apply_choices()  # idempotent
        asked = prepare(CreateCompletionRequest(prompt="p", n=3))
        assert isinstance(asked, llama_server.CompletionChoices) and asked.llama is model and asked.n == 3
        assert prepare(CreateCompletionRequest(prompt="p")) is model
        assert prepare(CreateCompletionRequest(prompt="p", n=3), {"stream": True}) is model
        assert prepare(CreateChatCompletionRequest(messages=[{"role": "user", "content": "p"}], n=3)) is model
    finally:
        llama_server.remove_choices()
    assert prepare(CreateCompletionRequest(prompt="p", n=3)) is model and not llama_server._ORIGINAL


@pytest.mark.llm
@pytest.mark.slow
def test_n_choices_evaluate_the_prompt_once_and_depend_on_the_request_alone(monkeypatch):
    """A real (tiny) model with whole prompts: CompletionChoices evaluates the prompt once (the further choices
    evaluate its last token only), counts its tokens once, writes distinct choices, gives choice 0 the reply of the
    same request without n, and the same choices again after another request."""
    _, model, evals = tiny_llama(monkeypatch)
    prompt = "<|im_start|>user\nWrite one sentence of a negative review of a slow thriller.<|im_end|>\n<|im_start|>assistant\n"
    other = "<|im_start|>user\nWrite one sentence about a loud comedy.<|im_end|>\n<|im_start|>assistant\n"
    n_prompt = len(model.tokenize(prompt.encode(), special=True))
    kwargs = {"prompt": prompt, "max_tokens": 16, "temperature": 0.9, "seed": 11}
    llama_server.apply_whole_prompts()
    try:
        alone = model.create_completion(**kwargs)["choices"][0]["text"]
        evals.clear()
        out = llama_server.CompletionChoices(model, 3)(**kwargs)
        prompt_evals = [count for count in evals if count > 1]
        model.create_completion(prompt=other, max_tokens=8, seed=1)
        again = llama_server.CompletionChoices(model, 3)(**kwargs)
    finally:
        llama_server.remove_whole_prompts()
    texts = [choice["text"] for choice in out["choices"]]
    assert [choice["index"] for choice in out["choices"]] == [0, 1, 2]
    assert prompt_evals == [n_prompt]  # once, whole; choices 1 and 2 evaluate one token of it
    assert out["usage"]["prompt_tokens"] == n_prompt
    assert out["usage"]["total_tokens"] == n_prompt + out["usage"]["completion_tokens"]
    assert texts[0] == alone and len(set(texts)) == 3
    assert [choice["text"] for choice in again["choices"]] == texts
