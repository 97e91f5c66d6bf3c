"""The embedded llama.cpp server: ``python -m s3_hf.llama_server ARGS`` is ``python -m llama_cpp.server ARGS`` with
llama-cpp-python's ``logprobs`` computed in numpy.

llama-cpp-python 0.3.36 answers a request for ``logprobs`` (the LLM verifier's label-word probabilities) by
log-softmaxing *every* position of the context, prompt included, over the whole vocabulary (152k for Qwen2.5), and
then sorting each generated position's whole vocabulary as Python tuples to take its top alternatives. On one thread
that is about 0.15 s per call plus 0.23 s per generated token, about a third of a verification call's seconds
(profiled; ``benchmarks/local_logprobs.py`` measures whole calls). :func:`apply` replaces those two steps, in
``llama_cpp.llama`` only:

- ``Llama.logits_to_logprobs`` on a 2-D array returns rows that are log-softmaxed when read (by the original function,
  one row at a time), so only the generated positions are computed;
- the module's ``sorted``, called on ``zip(row, range(len(row)))`` of a 1-D numpy row with ``reverse=True`` (the top
  alternatives), returns that row's :data:`TOP` best ``(logprob, token id)`` pairs in the full sort's order, picked
  with ``numpy.argpartition``; any other call is the builtin ``sorted``.

Callers read at most ``logprobs`` (OpenAI allows up to 20) pairs, so the answer is the same: the same alternatives
with the same values (``tests/test_llama_server.py`` compares both on a real model). The patch is applied only where
the installed llama-cpp-python's code has the two steps as written (checked in its source); otherwise the server runs
unpatched and says so in its log.

Every prompt is also evaluated whole (:func:`apply_whole_prompts`). llama-cpp-python keeps the KV cache of the
server's previous prompt and evaluates only the part of the next one that differs; the reused prefix and the new part
are then computed in other batches than a whole prompt would be, so the logits, and a sampled reply, depend on which
request the server answered before: the same request with the same seed got another reply after another request
(Qwen2.5-0.5B, 2026-12-07). Evaluated whole, a reply depends on the request alone, whichever replica answers it and
in whatever order. ``--prefix_reuse True`` keeps llama-cpp-python's reuse (``benchmarks/prefix_reuse.py`` measures
both).

A completion request with OpenAI's ``n`` above 1 gets ``n`` choices (:func:`apply_choices`; llama-cpp-python's server
drops ``n`` and answers one): the prompt is evaluated once, whole, and each further choice continues from its KV cache
within the same request, with the request's ``seed`` plus the choice's index. So the choices depend on the request
alone, and the prompt's tokens are counted once in ``usage``, as OpenAI bills them. The k candidates of one error
(:class:`~s3_hf.extrapolation.ErrorExtrapolator`) are asked that way.

    python -m s3_hf.llama_server --model model.gguf --port 8000 --logits_all True [--prefix_reuse False]
"""

from __future__ import annotations

import builtins
import inspect
import sys
from collections.abc import Sequence
from typing import Any

TOP = 256  # pairs the fast ``sorted`` returns: above any ``logprobs`` a client asks (OpenAI: at most 20)
_SLOW_STEPS = (
    "Llama.logits_to_logprobs(self._scores)[token_offset:]",
    "zip(logprobs_token, range(len(logprobs_token)))",
)
_ORIGINAL: dict[str, Any] = {}


class LazyLogprobRows:
    """Rows of a 2-D logits array, each log-softmaxed (by llama-cpp-python's own function) when it is read."""

    def __init__(self, logits: Any, to_logprobs: Any):
        self.logits = logits
        self.to_logprobs = to_logprobs

    def __len__(self) -> int:
        return len(self.logits)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return LazyLogprobRows(self.logits[index], self.to_logprobs)
        return self.to_logprobs(self.logits[index])

    def __iter__(self):
        for row in self.logits:
            yield self.to_logprobs(row)


def _whole_row(pairs: Any) -> Any:
    """The 1-D numpy row that ``pairs`` is ``zip(row, range(len(row)))`` of, not yet advanced; else ``None``."""
    import numpy as np

    if type(pairs) is not zip:
        return None
    iterators = pairs.__reduce__()[1]
    if len(iterators) != 2:
        return None
    values, indices = (iterator.__reduce__() for iterator in iterators)
    if values[0] is not builtins.iter or indices[0] is not builtins.iter or values[2:] != (0,) or indices[2:] != (0,):
        return None
    row, index_range = values[1][0], indices[1][0]
    if not isinstance(row, np.ndarray) or row.ndim != 1 or row.size <= 4 * TOP:
        return None
    if index_range != range(row.size):
        return None
    return row


def top_sorted(iterable: Any, /, *, key: Any = None, reverse: bool = False) -> list:
    """``sorted`` for ``llama_cpp.llama``: the :data:`TOP` best pairs of a row's ``zip(row, range(len(row)))`` sorted
    descending (the full sort's first :data:`TOP`); the builtin ``sorted`` for anything else."""
    import numpy as np

    row = _whole_row(iterable) if key is None and reverse else None
    if row is None:
        return builtins.sorted(iterable, key=key, reverse=reverse)
    best = np.argpartition(row, -TOP)[-TOP:]
    return builtins.sorted(zip(row[best], best.tolist()), reverse=True)


def applicable() -> bool:
    """Whether the installed llama-cpp-python computes logprobs the way :func:`apply` replaces."""
    import llama_cpp.llama as llama_module

    try:
        source = inspect.getsource(llama_module.Llama._create_completion)
    except (OSError, TypeError):
        return False
    return all(step in source for step in _SLOW_STEPS)


def apply() -> bool:
    """Patch ``llama_cpp.llama`` (see the module docstring); ``False`` (patching nothing) if not :func:`applicable`."""
    import llama_cpp.llama as llama_module
    import numpy as np

    if _ORIGINAL:
        return True
    if not applicable():
        return False
    original = llama_module.Llama.logits_to_logprobs

    def logits_to_logprobs(logits: Any, axis: int = -1) -> Any:
        if isinstance(logits, np.ndarray) and logits.ndim == 2 and axis in (-1, 1):
            return LazyLogprobRows(logits, original)
        return original(logits, axis)

    _ORIGINAL["logits_to_logprobs"] = original
    llama_module.Llama.logits_to_logprobs = staticmethod(logits_to_logprobs)
    llama_module.sorted = top_sorted
    return True


def remove() -> None:
    """Undo :func:`apply`."""
    import llama_cpp.llama as llama_module

    if not _ORIGINAL:
        return
    llama_module.Llama.logits_to_logprobs = staticmethod(_ORIGINAL.pop("logits_to_logprobs"))
    del llama_module.sorted


def apply_whole_prompts() -> None:
    """Patch ``llama_cpp.llama.Llama.generate`` to forget the previous prompt first, so no KV prefix is reused and
    each prompt is evaluated whole (see the module docstring)."""
    import llama_cpp.llama as llama_module

    if "generate" in _ORIGINAL:
        return
    original = llama_module.Llama.generate

    def generate(self: Any, *args: Any, **kwargs: Any):
        if not getattr(self, "_s3_same_prompt", False):  # a further choice of one request keeps its prompt's KV
            self.n_tokens = 0  # generate() then resets and evaluates from position 0, dropping the whole KV cache
        return (yield from original(self, *args, **kwargs))

    _ORIGINAL["generate"] = original
    llama_module.Llama.generate = generate


def remove_whole_prompts() -> None:
    """Undo :func:`apply_whole_prompts`."""
    import llama_cpp.llama as llama_module

    if "generate" in _ORIGINAL:
        llama_module.Llama.generate = _ORIGINAL.pop("generate")


class CompletionChoices:
    """``llama(**kwargs)`` answered with ``n`` choices (see the module docstring); what :func:`apply_choices` hands
    llama-cpp-python's completion handler in place of the model when a request asks for ``n > 1``."""

    def __init__(self, llama: Any, n: int):
        self.llama = llama
        self.n = n

    def __call__(self, **kwargs: Any) -> dict[str, Any]:
        first = self.llama(**kwargs)
        choices = [dict(first["choices"][0], index=0)]
        completion_tokens = first["usage"]["completion_tokens"]
        seed = kwargs.get("seed")
        for index in range(1, self.n):
            again = dict(kwargs, seed=None if seed is None else (int(seed) + index) % (2**31 - 1))
            self.llama._s3_same_prompt = True  # the whole-prompt patch keeps the KV cache of this very prompt
            try:
                out = self.llama(**again)
            finally:
                self.llama._s3_same_prompt = False
            choices.append(dict(out["choices"][0], index=index))
            completion_tokens += out["usage"]["completion_tokens"]
        prompt_tokens = first["usage"]["prompt_tokens"]
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        return {**first, "choices": choices, "usage": usage}


def apply_choices() -> None:
    """Patch ``llama_cpp.server.app.prepare_request_resources`` so that a non-streaming completion request with
    ``n > 1`` is answered by :class:`CompletionChoices` (see the module docstring)."""
    import llama_cpp.server.app as app
    from llama_cpp.server.types import CreateCompletionRequest

    if "prepare_request_resources" in _ORIGINAL:
        return
    original = app.prepare_request_resources

    def prepare_request_resources(body: Any, llama_proxy: Any, body_model: Any, kwargs: dict) -> Any:
        llama = original(body, llama_proxy, body_model, kwargs)
        n = getattr(body, "n", None) or 1
        if isinstance(body, CreateCompletionRequest) and n > 1 and not kwargs.get("stream"):
            return CompletionChoices(llama, n)
        return llama

    _ORIGINAL["prepare_request_resources"] = original
    app.prepare_request_resources = prepare_request_resources


def remove_choices() -> None:
    """Undo :func:`apply_choices`."""
    import llama_cpp.server.app as app

    if "prepare_request_resources" in _ORIGINAL:
        app.prepare_request_resources = _ORIGINAL.pop("prepare_request_resources")


def _pop_prefix_reuse(args: list[str]) -> tuple[bool, list[str]]:
    """``--prefix_reuse True|False`` (ours; default False) taken out of the server's ``args``."""
    if "--prefix_reuse" not in args:
        return False, args
    at = args.index("--prefix_reuse")
    value = args[at + 1] if at + 1 < len(args) else ""
    if value not in ("True", "False"):
        raise SystemExit(f"s3_hf.llama_server: --prefix_reuse takes True or False, got {value!r}")
    return value == "True", args[:at] + args[at + 2 :]


def main(argv: Sequence[str] | None = None) -> int:
    """Run llama-cpp-python's server with :func:`apply`'s patch and, unless ``--prefix_reuse True``, whole-prompt
    evaluation; ``argv``: its command-line arguments."""
    from llama_cpp.server.__main__ import main as server_main

    prefix_reuse, args = _pop_prefix_reuse(list(sys.argv[1:] if argv is None else argv))
    patched = apply()
    apply_choices()
    if not prefix_reuse:
        apply_whole_prompts()
    print(
        f"s3_hf.llama_server: numpy logprobs {'on' if patched else 'off (unknown llama-cpp-python code)'}; "
        f"prompts evaluated {'after the reused KV prefix' if prefix_reuse else 'whole'}",
        flush=True,
    )
    sys.argv = [sys.argv[0], *args]
    server_main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
