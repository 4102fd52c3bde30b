"""The embedded generator: llama.cpp in-process, one persistent scheduler for every caller.

One background thread owns one llama.cpp context with many sequences. Every caller (any
problem, any strategy, concurrent server requests) submits requests to it; each scheduler
iteration packs **one** ``llama_decode`` batch with the next token of every live sequence plus
chunks of prompts waiting to be read, so all live trajectories advance together.

* N samples of one prompt cost one prefill: the prompt is read into one sequence and its KV
  cache is copied (``llama_memory_seq_cp``; with the unified KV cache the cells are shared, not
  duplicated) to the other N-1 sequences, which then sample their first token from the same
  logits with their own rng.
* ``keep=True`` requests return a :class:`SeqHandle`; requests with ``parent=handle`` fork it
  (copy its KV sequence) and continue without re-reading the prefix. ``free(handle)`` drops it.
* Cancelling the awaiting task cancels the sequence at the next iteration and frees its KV.
* ``evaluated_tokens`` counts every token the model evaluated (prefill and decode).
* Token confidence (``GenRequest.confidence=k``) is computed from the same logits rows, after
  the draw, only for the samples that ask (:func:`~.sampling.token_confidence`); a request's
  ``stop_rule`` is checked right after each of its tokens, so a sequence it stops is never
  decoded again and its KV cells are freed at once (``finish_reason="confidence"``).
  Self-certainty (``GenRequest.self_certainty``, ``KL(U || p)`` over the full vocabulary) is
  computed the same way, from the same rows, only for the samples that ask
  (:func:`~.sampling.self_certainty`).
* Sampling is done in numpy from the raw logits (:mod:`infscale.backends.sampling`), with each
  sample's own ``numpy.random.Generator`` seeded by the request's seed, so a sample does not
  depend on what else shares its batch (up to llama.cpp's batch-size numerics). The logits of
  a step are read once, as a view of llama.cpp's buffer, and the plain tempered draws of all
  live sequences happen in one float32 array operation (:func:`~.sampling.sample_rows`).
* JSON-constrained decoding (``SamplingParams.response_format``, :mod:`~.grammar`): each
  constrained sample owns a llama.cpp grammar state; at each step its logits row is masked
  (rejected tokens at ``-inf``, end of text only where the JSON is complete) before the numpy
  draw (:func:`~.sampling.sample_masked`), and the drawn token is fed to the grammar. A kept
  handle keeps the state and every fork of it continues from a clone; freeing the sequence frees
  it. ``logprobs`` stay the model's unmodified distribution, ``sampled_logprobs`` are those of
  the masked distribution drawn from. Steps without constrained samples do no grammar work.
* At most ``max_live`` samples run at once; more wait in a first-come-first-served queue, a
  whole request group at a time (a prompt is read once for all its samples); a group larger
  than the cap runs alone. The cap is set per KV layout from bench/concurrency.py: on the
  unified cache each token's attention spans the cells of every live sequence, so fewer live
  samples run faster; on per-sequence streams llama.cpp cuts a batch into one micro-batch per
  run of consecutive sequence ids, so the decoding samples are kept on the lowest ids.
* llama.cpp runs on all usable cores unless ``n_threads`` / ``INFSCALE_THREADS`` says otherwise;
  ``"auto"`` chooses the count by measuring decode steps (:class:`_ThreadTuner`), for machines
  shared with other CPU-bound work. The thread count changes llama.cpp's numerics slightly, so
  under ``"auto"`` a seeded sample also depends on when the tuner switched; a fixed count keeps
  seeded runs repeatable. ``profile`` holds the seconds the scheduler spent in decode, logits
  reading, sampling and bookkeeping.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
import bisect
import concurrent.futures as cf
import ctypes
import heapq
import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendError, ConfigError, MissingExtraError
from ..params import SamplingParams
from ..types import Completion, ConfidenceStop, GenRequest
from .base import Capabilities, Generator, OnFinish, _settle, as_finished
from .grammar import Grammar, GrammarBook
from .sampling import (_wants_logprob, log_softmax, model_logprob, sample_masked, sample_rows, sample_token,
                       self_certainty, token_confidence)

__all__ = ["LlamaEngine", "SeqHandle"]

log = logging.getLogger("infscale")

_llama_log_callback = None  # keep a reference: llama.cpp calls it from C


def _import_llama_cpp():
    try:
        import llama_cpp  # noqa: PLC0415
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingExtraError("llama-cpp-python (the embedded engine)", "pip install 'infscale[embedded]'") from e
    return llama_cpp


def _quiet_llama_logs(llama_cpp) -> None:
    """Route llama.cpp's C-side logging to Python logging at DEBUG (it is very chatty)."""
    global _llama_log_callback
    if _llama_log_callback is not None:
        return
    clog = logging.getLogger("infscale.llama_cpp")

    def _cb(level, text, user_data):  # pragma: no cover - called from C
        if clog.isEnabledFor(logging.DEBUG):
            clog.debug(text.decode("utf-8", errors="replace").rstrip())

    _llama_log_callback = llama_cpp.llama_log_callback(_cb)
    llama_cpp.llama_log_set(_llama_log_callback, ctypes.c_void_p(0))


def extra_buffer_types_safe() -> bool:
    """Whether to let llama.cpp repack weights into its extra CPU buffer types.

    On CPUs with AMX, ggml's AMX matmul crashes (SIGSEGV) on multi-token batches of the Q4_1
    SmolLM2 file (seen with llama-cpp-python 0.3.36), so extra buffer types are off there.
    ``INFSCALE_LLAMA_EXTRA_BUFTS=1`` or ``0`` overrides the choice.
    """
    env = os.environ.get("INFSCALE_LLAMA_EXTRA_BUFTS")
    if env in ("0", "1"):
        return env == "1"
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="ignore") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_tile" not in line.split()
    except OSError:
        pass
    return True


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


# samples decoded at once, by KV layout, from bench/concurrency.py (20 problems x 8 samples, two
# threads, two interleaved rounds): on the unified cache every token's attention spans the cells
# of all live sequences, so 64 live ran at 0.82 of one problem at a time and 16 at 0.99; on
# streams a token attends to its own stream, and 64 live ran at 1.22 of one at a time (16: 1.05)
DEFAULT_MAX_LIVE = {"unified": 16, "streams": 64}
KV_LAYOUTS = ("unified", "streams")
DEFAULT_N_CTX = 16384  # unified: cells shared by all sequences
DEFAULT_SEQ_CELLS = 512  # streams: cells of each sequence's own stream


def kv_layout_setting(kv_layout: str | None, name: str = "kv_layout") -> str:
    """The KV-cache layout asked for: ``"unified"`` or ``"streams"`` (``None`` reads
    ``INFSCALE_KV_LAYOUT``; unset, ``"unified"``)."""
    source = name
    if kv_layout is None:
        kv_layout = os.environ.get("INFSCALE_KV_LAYOUT", "").strip() or "unified"
        source = "INFSCALE_KV_LAYOUT"
    if not isinstance(kv_layout, str) or kv_layout.lower() not in KV_LAYOUTS:
        raise ConfigError(source, f"got {kv_layout!r}", "'unified' or 'streams'")
    return kv_layout.lower()


def best_concurrency(n: int, max_live: int | None = None) -> int:
    """Problems in flight that keep the engine full: enough for ``max_live`` samples when each
    problem runs ``n`` at once, plus one waiting in the queue so the engine never idles while a
    finished problem's Python code runs. ``max_live`` defaults to the default layout's cap
    (:data:`DEFAULT_MAX_LIVE`, layout from ``INFSCALE_KV_LAYOUT``)."""
    if max_live is None:
        max_live = DEFAULT_MAX_LIVE[kv_layout_setting(None)]
    return -(-max_live // max(1, n)) + 1


def threads_setting(n_threads: int | str | None, name: str = "n_threads") -> int | str:
    """The llama.cpp thread count asked for: an integer >= 1, or ``"auto"``.

    ``None`` reads ``INFSCALE_THREADS``; unset, it is every usable core, fixed (seeded runs
    repeat exactly: the thread count changes llama.cpp's numerics slightly). ``"auto"`` lets
    the engine choose between all usable cores and one thread by measuring its own decode steps
    (see :class:`_ThreadTuner`): robust beside other CPU-bound work, at the price of samples
    that depend on when it switched.
    """
    source = name
    if n_threads is None:
        n_threads = os.environ.get("INFSCALE_THREADS", "").strip() or usable_cores()
        source = "INFSCALE_THREADS"
    value: object = n_threads
    if isinstance(n_threads, str):
        if n_threads.lower() == "auto":
            return "auto"
        value = int(n_threads) if n_threads.isdigit() else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(source, f"got {n_threads!r}", "an integer >= 1 or 'auto'")
    return value


class _ThreadTuner:
    """Choose llama.cpp's thread count by measuring decode steps, and keep re-checking.

    ggml's threads meet at a barrier after every graph node (hundreds per decode). When another
    process takes one of this machine's cores, a thread waiting there spins while its partner
    is descheduled, and decoding with as many threads as cores collapses (measured on a 2-core
    machine beside one CPU-bound process: 66x slower); one thread never waits. The tuner runs
    the current count, and every ``interval`` decode-only steps runs one step with another
    candidate; it switches when that step's seconds per token are below 0.85 of the recent
    average of the current count (steps next to each other have nearly the same batch). A
    losing probe doubles the interval (up to 256 steps), so a bad candidate costs little.
    """

    def __init__(self, candidates: list[int]):
        self.candidates = candidates
        self.current = candidates[0]
        self.cost: float | None = None  # recent seconds per token with the current count
        self.interval = 8
        self.countdown = 8
        self.turn = 0
        self.switches = 0

    def threads_for_step(self, decode_only: bool) -> int:
        """The count to use for the next step (a probe when it is time and the step is comparable)."""
        if len(self.candidates) < 2 or not decode_only or self.cost is None or self.countdown > 0:
            return self.current
        others = [c for c in self.candidates if c != self.current]
        self.turn += 1
        return others[self.turn % len(others)]

    def observe(self, threads: int, n_tokens: int, seconds: float, decode_only: bool) -> None:
        if not decode_only or n_tokens <= 0:
            return
        per = seconds / n_tokens
        if threads == self.current:
            self.cost = per if self.cost is None else 0.7 * self.cost + 0.3 * per
            self.countdown -= 1
            return
        # a probe
        if self.cost is not None and per < 0.85 * self.cost:
            self.current, self.cost, self.interval = threads, per, 8
            self.switches += 1
        else:
            self.interval = min(2 * self.interval, 256)
        self.countdown = self.interval


class SeqHandle:
    """A kept trajectory: a KV-cache sequence the engine holds until :meth:`LlamaEngine.free`.

    ``n_past`` tokens are in the cache; ``pending`` tokens were sampled but not yet evaluated.
    """

    __slots__ = ("seq_id", "n_past", "pending", "finished", "freed", "engine_id", "prompt_tokens", "grammar")

    def __init__(self, seq_id: int, n_past: int, pending: list[int], finished: bool, engine_id: int, prompt_tokens: int,
                 grammar: Grammar | None = None):
        self.grammar = grammar  # the sequence's JSON-grammar state (constrained requests), forked with it
        self.seq_id = seq_id
        self.n_past = n_past
        self.pending = pending
        self.finished = finished
        self.freed = False
        self.engine_id = engine_id
        self.prompt_tokens = prompt_tokens

    def __repr__(self) -> str:
        return f"SeqHandle(seq={self.seq_id}, n_past={self.n_past}, freed={self.freed})"


@dataclass
class _Sample:
    """One requested completion, from submission to result."""

    params: SamplingParams
    rng: np.random.Generator
    seed: int | None
    future: cf.Future
    keep: bool
    seq_id: int = -1
    n_past: int = 0
    pending: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    sampled_logprobs: list[float] = field(default_factory=list)
    top: list[dict[str, float]] | None = None
    text: bytearray = field(default_factory=bytearray)
    conf_k: int = 0  # DeepConf token confidence over the top conf_k candidates (0: not asked)
    conf: list[float] | None = None
    rule: ConfidenceStop | None = None
    window_sum: float = 0.0  # the rule's running sum of the last rule.window confidences
    sc: list[float] | None = None  # self-certainty per token (None: not asked)
    grammar: Grammar | None = None  # its own grammar state (response_format), from admission on

    def drop_grammar(self) -> None:
        if self.grammar is not None:
            self.grammar.free()
            self.grammar = None


class _IdPool:
    """Free sequence ids, lowest first (so the ids in use stay packed at the bottom)."""

    def __init__(self, n: int):
        self._heap = list(range(n))
        self._set = set(self._heap)

    def __len__(self) -> int:
        return len(self._heap)

    def __contains__(self, i: int) -> bool:
        return i in self._set

    def lowest(self) -> int:
        return self._heap[0]

    def take(self) -> int:
        i = heapq.heappop(self._heap)
        self._set.discard(i)
        return i

    def give(self, i: int) -> None:
        heapq.heappush(self._heap, i)
        self._set.add(i)


@dataclass
class _Job:
    """Samples that share one prefix: the leader reads it, the followers copy its KV."""

    prompt: list[int]  # tokens to read (after the parent's cache, if any)
    samples: list[_Sample]
    parent: SeqHandle | None = None
    started: bool = False
    read: int = 0  # prompt tokens already in the leader's cache
    grammar: Grammar | None = None  # template of a constrained request (not owned; forks use the parent's)
    grammar_prefix: list[int] = field(default_factory=list)  # prefix tokens the grammar reads first

    @property
    def leader(self) -> _Sample:
        return self.samples[0]


class LlamaEngine(Generator):
    """Embedded llama.cpp generator with a persistent multi-sequence scheduler.

    model_path: a GGUF file. kv_layout: ``"unified"`` (one KV cache whose cells all sequences
    share; a copied prompt shares its cells) or ``"streams"`` (one stream per sequence, each of
    n_ctx / n_seq_max cells; a copy duplicates the cells, but a token attends to its own stream
    only, where in the unified cache it spans the used cells of every sequence, masked);
    default ``INFSCALE_KV_LAYOUT``, else unified. n_ctx: KV-cache cells in all (default 16384
    unified, n_seq_max x 512 streams).
    n_seq_max: sequences that may exist at once (running samples and kept handles). max_live:
    samples decoded at once (default by layout, :data:`DEFAULT_MAX_LIVE`: 16 unified, 64
    streams); more wait in a first-come-first-served queue, a whole request group at a time, so
    a prompt is read once for all its samples; a group larger than the cap runs alone, whole.
    On streams the decoding samples are kept on consecutive sequence ids (see :meth:`_pack`).
    n_batch: tokens per decode
    call. n_threads: llama.cpp threads, an integer or ``"auto"`` (default: ``INFSCALE_THREADS``,
    else every usable core; ``"auto"``: chosen by measuring decode steps, between all usable
    cores and one, and re-checked while running, see :class:`_ThreadTuner` — for a machine
    shared with other CPU-bound work; seeded samples then depend on when it switched). chat_template: ``"auto"`` (from the GGUF metadata; none means a base model
    prompted with plain text) or a Jinja template string. n_gpu_layers: layers offloaded to a GPU
    (llama.cpp's offload; -1: all; needs llama-cpp-python built with CUDA or Metal, a CPU-only
    build keeps them on the CPU).

    reproducible: decode one sample at a time from an empty cache, so that a sample depends only
    on its prompt, parameters and seed, never on what else was running. The default batched mode
    is not batch-invariant: a sequence's logits change slightly with where its tokens land among
    the KV-cache cells (attention sums in a different order), and a small model amplifies that
    (on SmolLM2-135M: KL ~3e-3 nats per token), so a sample drawn beside others may diverge when
    regenerated alone. Per-sequence streams do not cure that: a batched run on them still gave a
    sample that differed when regenerated alone. Reproducible mode costs the batching and the
    prefix sharing (see docs/evaluation.md for the measured cost). Kept trajectories (step-level
    search) also run one at a time there, but forks share the cache with their parents, so
    search is not covered by the guarantee.
    """

    name = "llama.cpp"
    _ids = itertools.count(1)

    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        n_ctx: int | None = None,
        n_seq_max: int = 128,
        n_batch: int = 1024,
        n_threads: int | str | None = None,
        max_live: int | None = None,
        chat_template: str | None = "auto",
        model_name: str | None = None,
        reproducible: bool = False,
        n_gpu_layers: int = 0,
        kv_layout: str | None = None,
    ):
        setting = threads_setting(n_threads)
        if isinstance(n_gpu_layers, bool) or not isinstance(n_gpu_layers, int) or n_gpu_layers < -1:
            raise ConfigError("n_gpu_layers", f"got {n_gpu_layers!r}", "an integer >= -1 (-1: all layers)")
        layout = kv_layout_setting(kv_layout)
        for pname, v in (("n_ctx", n_ctx), ("n_seq_max", n_seq_max)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(pname, f"got {v!r}", "an integer >= 1")
        if n_ctx is None:
            n_ctx = DEFAULT_N_CTX if layout == "unified" else n_seq_max * DEFAULT_SEQ_CELLS
        if layout == "streams" and n_ctx // n_seq_max < 2:
            raise ConfigError("n_ctx", f"{n_ctx} cells leave {n_ctx // n_seq_max} per sequence in {n_seq_max} streams",
                              "an n_ctx of at least 2 x n_seq_max with kv_layout='streams'")
        if max_live is None:
            max_live = DEFAULT_MAX_LIVE[layout]
        if isinstance(max_live, bool) or not isinstance(max_live, int) or max_live < 1:
            raise ConfigError("max_live", f"got {max_live!r}", "an integer >= 1")
        path = Path(model_path)
        if not path.is_file():
            raise ConfigError("model", f"model file not found: {path}", "an existing .gguf file or a registered model name")
        llama_cpp = _import_llama_cpp()
        self._ll = llama_cpp
        _quiet_llama_logs(llama_cpp)
        llama_cpp.llama_backend_init()
        self.model_path = path
        self.model_name = model_name or path.stem
        self.reproducible = bool(reproducible)
        self._engine_id = next(self._ids)

        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = n_gpu_layers  # llama.cpp offload (a CPU-only build keeps every layer on the CPU)
        self.n_gpu_layers = n_gpu_layers
        mparams.use_extra_bufts = extra_buffer_types_safe()
        self._model = llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)
        if not self._model:
            raise ConfigError("model", f"llama.cpp could not load {path}", "a valid GGUF model file")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)

        cores = usable_cores()
        threads = cores if setting == "auto" else setting
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = n_batch
        cparams.n_ubatch = min(n_batch, 512)
        cparams.n_seq_max = n_seq_max
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        cparams.kv_unified = layout == "unified"
        cparams.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            raise BackendError(f"llama.cpp could not create a context (n_ctx={n_ctx}, n_seq_max={n_seq_max})")
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self.n_ctx = llama_cpp.llama_n_ctx(self._ctx)
        self.n_seq_max = llama_cpp.llama_n_seq_max(self._ctx)
        self.kv_layout = layout
        # cells one sequence may fill: all of them (unified) or its own stream's share
        self.n_ctx_seq = self.n_ctx if layout == "unified" else self.n_ctx // self.n_seq_max
        self.n_batch = llama_cpp.llama_n_batch(self._ctx)
        self.n_ubatch = cparams.n_ubatch
        self.kv_unified = bool(cparams.kv_unified)
        self.threads_setting = setting
        # reproducible mode keeps one thread count: its samples must not depend on the load
        tune = setting == "auto" and not self.reproducible and cores > 1
        self._tuner = _ThreadTuner([cores, 1] if tune else [threads])
        self.max_live = min(max_live, self.n_seq_max)
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self._bos = llama_cpp.llama_vocab_bos(self._vocab)
        self._pieces: dict[int, bytes] = {}
        self._piece_buf = ctypes.create_string_buffer(256)

        self.chat_template = self._read_chat_template() if chat_template == "auto" else chat_template
        self.capabilities = Capabilities(
            logprobs=True, top_logprobs=True, prefill=True, native_n=True, kv_fork=True,
            chat_template=self.chat_template is not None, confidence=True, self_certainty="exact",
            response_format=True,
        )
        self._grammars = GrammarBook(llama_cpp, self._vocab, self.n_vocab)
        self._mask_pool: cf.ThreadPoolExecutor | None = None  # grammar masks of many rows, made at first need
        self._greedy_shortcut = True  # greedy constrained rows check the argmax first (tests turn it off)
        self._jinja = None

        # scheduler state; everything below is touched only by the scheduler thread,
        # except _inbox/_frees (under _cv)
        self.evaluated_tokens = 0
        self.decode_calls = 0
        self.profile = _Profile()
        self._threads_set = threads
        self._free_ids = _IdPool(self.n_seq_max)
        self._queue: deque[_Job] = deque()
        self._live: list[_Sample] = []  # samples with a sequence, not finished
        self._jobs_reading: list[_Job] = []
        self._inbox: list[_Job] = []
        self._frees: list[SeqHandle] = []
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="infscale-llama", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ text <-> tokens
    def _read_chat_template(self) -> str | None:
        raw = self._ll.llama_model_chat_template(self._model, None)
        return raw.decode("utf-8", errors="replace") if raw else None

    def meta(self, key: str) -> str | None:
        """A GGUF metadata value as a string, or None."""
        buf = ctypes.create_string_buffer(4096)
        n = self._ll.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace") if n >= 0 else None

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 8
        arr = (self._ll.llama_token * cap)()
        n = self._ll.llama_tokenize(self._vocab, data, len(data), arr, cap, add_bos, special)
        if n < 0:
            cap = -n
            arr = (self._ll.llama_token * cap)()
            n = self._ll.llama_tokenize(self._vocab, data, len(data), arr, cap, add_bos, special)
        return list(arr[:n])

    def piece(self, token: int) -> bytes:
        p = self._pieces.get(token)
        if p is None:
            n = self._ll.llama_token_to_piece(self._vocab, token, self._piece_buf, len(self._piece_buf), 0, False)
            p = self._piece_buf.raw[: max(n, 0)]
            self._pieces[token] = p
        return p

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def render(self, messages: list[dict[str, str]]) -> str:
        """Messages → prompt text, with the model's chat template (ending with the assistant
        turn's opening), or as plain text for a base model without one."""
        if self.chat_template is None:
            return "\n\n".join(m["content"] for m in messages) + "\n"
        if self._jinja is None:
            try:
                from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: PLC0415
            except ImportError as e:  # pragma: no cover
                raise MissingExtraError("jinja2", "pip install 'infscale[embedded]'") from e
            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

            def raise_exception(msg):
                raise ConfigError("messages", str(msg), "messages the model's chat template supports")

            env.globals["raise_exception"] = raise_exception
            env.globals["strftime_now"] = lambda fmt: time.strftime(fmt)
            self._jinja = env.from_string(self.chat_template)
        bos = self.detokenize([self._bos]) if self._bos >= 0 else ""
        eos = self.detokenize([self._ll.llama_vocab_eos(self._vocab)])
        return self._jinja.render(messages=messages, add_generation_prompt=True, bos_token=bos, eos_token=eos)

    def _prompt_tokens(self, r: GenRequest) -> list[int]:
        text = self.render(r.messages) if r.messages is not None else r.prompt
        toks = self.tokenize(text + r.prefix, add_bos=self._add_bos)
        if self._add_bos and len(toks) > 1 and toks[0] == self._bos and toks[1] == self._bos:
            toks = toks[1:]  # the template already wrote BOS
        return toks

    # ------------------------------------------------------------------ public API
    def submit(self, requests: list[GenRequest]) -> list[cf.Future]:
        """Queue requests; return one concurrent future per request, in order. Requests with
        the same prompt (or the same parent and prefix) share one prefill."""
        if self._closed:
            raise BackendError("the engine is closed")
        futures: list[cf.Future] = []
        groups: dict[Any, _Job] = {}
        for r in requests:
            fut: cf.Future = cf.Future()
            futures.append(fut)
            seed = r.seed if r.seed is not None else r.params.seed
            s = _Sample(params=r.params, rng=np.random.default_rng(seed), seed=seed, future=fut, keep=r.keep)
            if r.params.top_logprobs:
                s.top = []
            if r.confidence:
                s.conf_k, s.conf, s.rule = r.confidence, [], r.stop_rule
            if r.self_certainty:
                s.sc = []
            if r.parent is not None:
                h = r.parent
                if not isinstance(h, SeqHandle) or h.engine_id != self._engine_id:
                    raise ConfigError("parent", "not a handle of this engine", "a handle returned by this engine with keep=True")
                if h.freed:
                    raise ConfigError("parent", "the handle was already freed", "a live handle")
                if r.params.response_format is not None and h.grammar is None:
                    raise ConfigError("response_format", "the parent handle was generated without it, so its "
                                      "continuation cannot be constrained", "the same response_format on the "
                                      "request that made the parent, or none on the continuation")
                key: Any = ("fork", id(h), r.prefix)
                prompt = list(h.pending) + (self.tokenize(r.prefix) if r.prefix else [])
                template = None
            else:
                prompt = self._prompt_tokens(r)
                rf = r.params.response_format
                template = self._grammars.template(rf) if rf is not None else None
                key = ("prompt", tuple(prompt), rf)
                h = None
            if h is None and len(prompt) >= self.n_ctx_seq:
                raise ConfigError("prompt", f"{len(prompt)} tokens do not fit the context of {self.n_ctx_seq} per sequence",
                                  "a shorter prompt or a larger n_ctx")
            job = groups.get(key)
            if job is None:
                job = groups[key] = _Job(prompt=prompt, samples=[], parent=h, grammar=template)
                if r.prefix and (template is not None or (h is not None and h.grammar is not None)):
                    job.grammar_prefix = self.tokenize(r.prefix, special=False)
            job.samples.append(s)
        with self._cv:
            self._inbox.extend(groups.values())
            self._cv.notify()
        return futures

    async def generate(self, requests: list[GenRequest]) -> list[Completion]:
        futs = [asyncio.wrap_future(f) for f in self.submit(requests)]
        try:
            return list(await asyncio.gather(*futs))
        except BaseException:
            for f in futs:
                f.cancel()
            raise

    async def generate_settled(self, requests: list[GenRequest]) -> list[Completion]:
        futs = [asyncio.wrap_future(f) for f in self.submit(requests)]
        try:
            outs = await asyncio.gather(*futs, return_exceptions=True)
        except BaseException:
            for f in futs:
                f.cancel()
            raise
        return [_settle(o) for o in outs]

    async def stream(self, requests: list[GenRequest], on_finish: OnFinish | None = None
                     ) -> AsyncIterator[tuple[int, Completion]]:
        async with aclosing(as_finished([asyncio.wrap_future(f) for f in self.submit(requests)], on_finish)) as items:
            async for item in items:
                yield item

    def free(self, handle: SeqHandle) -> None:
        """Release a kept sequence (idempotent)."""
        if handle is None or handle.freed:
            return
        handle.freed = True
        with self._cv:
            self._frees.append(handle)
            self._cv.notify()

    def check_response_format(self, response_format: str) -> None:
        """Build (and cache) the grammar of a ``response_format`` now; ConfigError naming what it
        cannot enforce (see :mod:`infscale.backends.grammar`)."""
        self._grammars.template(response_format)

    def best_concurrency(self, n: int) -> int:
        """Problems of width ``n`` to keep in flight (see :func:`best_concurrency`)."""
        return best_concurrency(n, self.max_live)

    @property
    def n_threads(self) -> int:
        """llama.cpp threads in use now (the tuner may change it between steps)."""
        return self._tuner.current

    def stats(self) -> dict[str, int]:
        return {
            "evaluated_tokens": self.evaluated_tokens,
            "decode_calls": self.decode_calls,
            "live": len(self._live),
            "queued": len(self._queue),
            "free_sequences": len(self._free_ids),
        }

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout=30)
        ll = self._ll
        ll.llama_batch_free(self._batch)
        ll.llama_free(self._ctx)
        if self._mask_pool is not None:
            self._mask_pool.shutdown(wait=True)
        self._grammars.close()
        ll.llama_model_free(self._model)

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    # ------------------------------------------------------------------ scheduler thread
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._closed and not self._inbox and not self._frees and not self._runnable():
                    self._cv.wait(timeout=0.5)
                if self._closed:
                    break
                self._queue.extend(self._inbox)
                self._inbox.clear()
                frees, self._frees = self._frees, []
            try:
                for h in frees:
                    self._release(h.seq_id)
                    if h.grammar is not None:
                        h.grammar.free()
                self._reap_cancelled()
                self._admit()
                if self._jobs_reading or self._live:
                    self._step()
            except Exception as e:  # noqa: BLE001 - a failure must reach every waiting caller
                log.exception("embedded engine step failed")
                self._fail_all(BackendError(f"embedded engine failed: {e}"))
        self._fail_all(BackendError("the engine was closed"), include_queue=True)

    def _runnable(self) -> bool:
        if self._queue and not self._free_ids and not self._live and not self._jobs_reading:
            # every sequence is held by a kept handle: nothing will ever free one by itself
            stuck, self._queue = self._queue, deque()
            exc = BackendError(f"all {self.n_seq_max} sequences are held by kept handles; free some "
                               "(engine.free) or create the engine with a larger n_seq_max", retryable=True)
            for job in stuck:
                for s in job.samples:
                    _set(s.future, exc=exc)
            return False
        return bool(self._live or self._jobs_reading or (self._queue and self._free_ids))

    def _release(self, seq_id: int) -> None:
        if seq_id < 0 or seq_id in self._free_ids:
            return  # never hand an id out twice
        self._ll.llama_memory_seq_rm(self._mem, seq_id, -1, -1)
        self._free_ids.give(seq_id)

    def _pack(self) -> None:
        """Per-sequence streams: keep the decoding samples on the lowest sequence ids, in order.

        llama.cpp cuts a batch on streams into one micro-batch per run of consecutive sequence
        ids (each a pass over the weights), so samples that finish at different times would
        leave the live ids scattered and a decode step split into many small passes. A sample
        whose id is above a free one moves down (its stream is copied, the old one freed), and
        the live samples go into the batch in id order.
        """
        live = sorted(self._live, key=lambda x: x.seq_id)
        while live and self._free_ids and self._free_ids.lowest() < live[-1].seq_id:
            s = live.pop()
            dst = self._free_ids.take()
            self._ll.llama_memory_seq_cp(self._mem, s.seq_id, dst, -1, -1)
            self._release(s.seq_id)
            s.seq_id = dst
            bisect.insort(live, s, key=lambda x: x.seq_id)
            self.profile.moves += 1
        self._live = live

    def _reap_cancelled(self) -> None:
        keep = []
        for s in self._live:
            if s.future.cancelled():
                self._release(s.seq_id)
                s.drop_grammar()
            else:
                keep.append(s)
        self._live = keep
        for job in list(self._queue):
            job.samples = [s for s in job.samples if not s.future.cancelled()]
            if not job.samples:
                self._queue.remove(job)
        for job in list(self._jobs_reading):
            if all(s.future.cancelled() for s in job.samples):
                for s in job.samples:
                    self._release(s.seq_id)
                    s.drop_grammar()
                self._jobs_reading.remove(job)

    def _admit(self) -> None:
        """Give waiting jobs sequences, first come first served, a whole job at a time.

        At most ``max_live`` samples run at once (live plus reading a prompt); the job at the
        head of the queue waits until all its samples fit, and nothing overtakes it, so no
        request starves. A job larger than the cap waits until nothing runs and then runs
        whole; it is split only when it is larger than the free sequences (then the rest reads
        the prefix again later).
        """
        while self._queue and self._free_ids:
            running = len(self._live) + sum(len(j.samples) for j in self._jobs_reading)
            if self.reproducible and running:
                return  # one sample at a time
            job = self._queue[0]
            if job.parent is not None and job.parent.freed:
                self._queue.popleft()
                for s in job.samples:
                    _set(s.future, exc=ConfigError("parent", "the handle was freed before the fork ran", "a live handle"))
                continue
            if not job.prompt:  # checked before any sequence id is taken
                self._queue.popleft()
                for s in job.samples:
                    _set(s.future, exc=BackendError("nothing to continue from: the parent has no pending token "
                                                    "and no prefix was given"))
                continue
            room = min(len(self._free_ids), self.max_live - running)
            if len(job.samples) > room and running:
                return  # wait for running samples to finish
            # alone, a job larger than the cap runs whole (its prompt read once)
            take = 1 if self.reproducible else min(len(job.samples), len(self._free_ids))
            if take < len(job.samples):
                # split: the rest waits (and reads the prefix again later)
                rest = _Job(prompt=job.prompt, samples=job.samples[take:], parent=job.parent, grammar=job.grammar,
                            grammar_prefix=job.grammar_prefix)
                job.samples = job.samples[:take]
                self._queue[0] = rest
            else:
                self._queue.popleft()
            if not self._start_grammars(job):
                continue
            if self.reproducible and len(self._free_ids) == self.n_seq_max:
                # nothing is held: start from an empty cache, so the sample's tokens take the
                # same cells as when it runs alone
                self._ll.llama_memory_clear(self._mem, False)
            for s in job.samples:
                s.seq_id = self._free_ids.take()
            lead = job.leader
            if job.parent is not None:
                self._ll.llama_memory_seq_cp(self._mem, job.parent.seq_id, lead.seq_id, -1, -1)
                lead.n_past = job.parent.n_past
            self._jobs_reading.append(job)

    def _start_grammars(self, job: _Job) -> bool:
        """Give each sample of a constrained job its own grammar state: a clone of the request's
        template, or of the parent's state for a fork, after reading the job's prefix. False
        (the samples failed) if the prefix does not fit the grammar."""
        src = job.parent.grammar if job.parent is not None else job.grammar
        if src is None:
            return True
        base = src.clone()
        try:
            for t in job.grammar_prefix:
                if not self._grammars.allows(base, t):
                    for s in job.samples:
                        _set(s.future, exc=ConfigError("prefix", "it does not fit the response_format's grammar",
                                                       "a prefix that starts (or continues) a matching JSON text"))
                    return False
                base.accept(t)
            for s in job.samples:
                s.grammar = base.clone()
        finally:
            base.free()
        return True

    def _step(self) -> None:
        """One decode call: the next token of every live sample, then prompt chunks."""
        ll, b = self._ll, self._batch
        prof = self.profile
        t0 = time.perf_counter()
        if self.kv_layout == "streams":
            self._pack()
        prof.runs += _id_runs([s.seq_id for s in self._live])
        n = 0
        outs: list[Any] = []  # per output row: a _Sample (decode) or a _Job (prompt read)
        for s in self._live:
            tok = s.pending[0]
            b.token[n] = tok
            b.pos[n] = s.n_past
            b.n_seq_id[n] = 1
            b.seq_id[n][0] = s.seq_id
            b.logits[n] = 1
            outs.append(s)
            n += 1
        for job in self._jobs_reading:
            room = self.n_batch - n
            if room <= 0:
                break
            lead = job.leader
            chunk = job.prompt[job.read : job.read + room]
            for j, tok in enumerate(chunk):
                b.token[n] = tok
                b.pos[n] = lead.n_past + j
                b.n_seq_id[n] = 1
                b.seq_id[n][0] = lead.seq_id
                last = job.read + j == len(job.prompt) - 1
                b.logits[n] = 1 if last else 0
                n += 1
            job.read += len(chunk)
            lead.n_past += len(chunk)
            if job.read == len(job.prompt):
                outs.append(job)
        if n == 0:
            return
        b.n_tokens = n
        decode_only = n == len(self._live)
        threads = self._tuner.threads_for_step(decode_only)
        if threads != self._threads_set:
            ll.llama_set_n_threads(self._ctx, threads, threads)
            self._threads_set = threads
        t1 = time.perf_counter()
        rc = ll.llama_decode(self._ctx, b)
        t2 = time.perf_counter()
        self._tuner.observe(threads, n, t2 - t1, decode_only)
        prof.bookkeeping += t1 - t0
        prof.decode += t2 - t1
        prof.steps += 1
        prof.rows += len(outs)
        self.decode_calls += 1
        if rc != 0:
            self._decode_failed(rc)
            return
        self.evaluated_tokens += n
        for s in self._live:
            s.n_past += 1
        ptr = ll.llama_get_logits(self._ctx)
        logits = np.ctypeslib.as_array(ptr, shape=(len(outs), self.n_vocab))
        t3 = time.perf_counter()
        prof.logits += t3 - t2
        # every sample that draws now, with its logits row (a job's samples share the row of
        # its prompt's last token)
        draw: list[tuple[_Sample, int]] = []
        finished_jobs = []
        for row, who in enumerate(outs):
            if isinstance(who, _Job):
                finished_jobs.append(who)
                job = who
                lead = job.leader
                for s in job.samples:  # every follower copies the prefix before anyone (the
                    if s is not lead:  # leader too) can finish or be cancelled and free it
                        ll.llama_memory_seq_cp(self._mem, lead.seq_id, s.seq_id, -1, -1)
                        s.n_past = lead.n_past
                    s.prompt_tokens = len(job.prompt)
                draw.extend((s, row) for s in job.samples)
            else:
                draw.append((who, row))
        for job in finished_jobs:
            self._jobs_reading.remove(job)
        kept = []
        constrained = []  # indices into kept of the samples with a grammar (response_format)
        for s, row in draw:
            if s.future.cancelled():
                self._release(s.seq_id)
                s.seq_id = -1
                s.drop_grammar()
            else:
                if s.grammar is not None:
                    constrained.append(len(kept))
                kept.append((s, row))
        t4 = time.perf_counter()
        if constrained:
            tokens = self._draw_constrained(logits, kept, constrained)
        else:
            tokens = self._draw(logits, kept, len(outs))
        confs = self._confidences(logits, kept)
        scs = [s for s, _ in kept if s.sc is not None]
        if scs:  # self-certainty of the rows that asked (one array operation)
            for s, v in zip(scs, self_certainty(logits[[row for s, row in kept if s.sc is not None]])):
                s.sc.append(float(v))
        t5 = time.perf_counter()
        still: list[_Sample] = []
        for (s, row), drawn, conf in zip(kept, tokens, confs):
            if drawn is None:  # the grammar allowed no token
                self._release(s.seq_id)
                s.seq_id = -1
                s.drop_grammar()
                _set(s.future, exc=BackendError("response_format: the grammar allows no token of the vocabulary "
                                                "here; the completion cannot go on"))
                continue
            tok, lp, slp = drawn
            if self._accept(s, tok, lp, slp, logits[row], conf):
                still.append(s)
        self._live = still
        prof.sampling += t5 - t4
        prof.bookkeeping += time.perf_counter() - t3 - (t5 - t4)

    def _draw(self, logits: np.ndarray, kept: list[tuple[_Sample, int]], n_rows: int) -> list:
        """One token per kept sample, unconstrained."""
        if self.reproducible:  # the float64 per-row sampler, exactly as samples were stored
            return [sample_token(logits[row], s.params, s.rng) for s, row in kept]
        # one array operation over all rows (logits are a view: nothing is copied)
        rows = [row for _, row in kept]
        z = logits if rows == list(range(n_rows)) else logits[rows]
        return sample_rows(z, [s.params for s, _ in kept], [s.rng for s, _ in kept])

    def _draw_constrained(self, logits: np.ndarray, kept: list[tuple[_Sample, int]], constrained: list[int]) -> list:
        """Like :meth:`_draw`, where the samples at ``constrained`` draw from their logits masked by
        their grammar (rejected tokens at ``-inf``; :func:`~.sampling.sample_masked`) and feed the
        drawn token to it. The other samples draw exactly as without them. ``None`` for a sample
        whose grammar allows no token."""
        out: list = [None] * len(kept)
        cset = set(constrained)
        free = [j for j in range(len(kept)) if j not in cset]
        if free:
            for j, t in zip(free, self._draw(logits, [kept[j] for j in free], -1)):
                out[j] = t
        if self._greedy_shortcut:
            # a greedy pick needs no mask when the model's own best token is allowed: it is then
            # the best allowed token too (the same first maximum), and greedy draws use no rng
            rest = []
            for j in constrained:
                s, row = kept[j]
                if s.params.greedy:
                    tok = int(logits[row].argmax())
                    if self._grammars.allows(s.grammar, tok):
                        s.grammar.accept(tok)
                        lp = model_logprob(logits[row], tok)
                        out[j] = (tok, lp if (self.reproducible or _wants_logprob(s.params)) else None, 0.0)
                        continue
                rest.append(j)
            constrained = rest
        jobs = [(kept[j][0].grammar, logits[kept[j][1]]) for j in constrained]
        threads = self._tuner.current
        if len(jobs) > 1 and threads > 1:  # llama.cpp's threads idle between decodes: mask in parallel
            if self._mask_pool is None:
                self._mask_pool = cf.ThreadPoolExecutor(max_workers=usable_cores(), thread_name_prefix="infscale-grammar")
            k = min(threads, len(jobs))  # k workers, each masking every k-th row
            parts = [self._mask_pool.submit(lambda i: [self._grammars.mask(*a) for a in jobs[i::k]], i) for i in range(k)]
            masks = [None] * len(jobs)
            for i, f in enumerate(parts):
                masks[i::k] = f.result()
        else:
            masks = [self._grammars.mask(g, row) for g, row in jobs]
        for j, masked in zip(constrained, masks):
            s, row = kept[j]
            if not np.isfinite(masked).any():
                continue
            tok, lp, slp = sample_masked(logits[row], masked, s.params, s.rng)
            s.grammar.accept(tok)
            out[j] = (tok, lp if (self.reproducible or _wants_logprob(s.params)) else None, slp)
        return out

    @staticmethod
    def _confidences(logits: np.ndarray, kept: list[tuple[_Sample, int]]) -> list[float | None]:
        """Token confidence of the rows whose samples asked for it (one array operation per
        distinct k); ``None`` for the others, which pay nothing."""
        out: list[float | None] = [None] * len(kept)
        by_k: dict[int, list[int]] = {}
        for j, (s, _) in enumerate(kept):
            if s.conf_k:
                by_k.setdefault(s.conf_k, []).append(j)
        for k, js in by_k.items():
            vals = token_confidence(logits[[kept[j][1] for j in js]], k)
            for j, v in zip(js, vals):
                out[j] = float(v)
        return out

    def _accept(self, s: _Sample, tok: int, lp: float | None, slp: float, row: np.ndarray,
                conf: float | None = None) -> bool:
        """Append the drawn token to ``s``; finish it if a stop condition holds. True if it goes on."""
        p = s.params
        s.tokens.append(tok)
        if s.conf is not None:
            s.conf.append(conf)
        if lp is not None:
            s.logprobs.append(lp)
        s.sampled_logprobs.append(slp)
        if s.top is not None:
            ls = log_softmax(row)
            k = p.top_logprobs
            ids = np.argpartition(-ls, k - 1)[:k]
            ids = ids[np.argsort(-ls[ids])]
            s.top.append({self.piece(int(i)).decode("utf-8", errors="replace"): float(ls[i]) for i in ids})
        if (not p.ignore_eos or s.grammar is not None) and self._ll.llama_vocab_is_eog(self._vocab, tok):
            self._finish(s, "stop", None, pending=[])
            return False
        before = len(s.text)
        s.text += self.piece(tok)
        if p.stop:
            text = s.text.decode("utf-8", errors="ignore")
            window = max(0, len(text) - (len(s.text) - before) - max(len(x) for x in p.stop) - 4)
            hit = None
            for x in p.stop:
                i = text.find(x, window)
                if i >= 0 and (hit is None or i < hit[0]):
                    hit = (i, x)
            if hit is not None:
                self._finish(s, "stop", hit[1], pending=[tok], cut=hit[0])
                return False
        if s.rule is not None and self._rule_stops(s):
            self._finish(s, "confidence", None, pending=[tok])
            return False
        if len(s.tokens) >= p.max_tokens or s.n_past + 1 >= self.n_ctx_seq:
            self._finish(s, "length", None, pending=[tok])
            return False
        s.pending = [tok]
        return True

    @staticmethod
    def _rule_stops(s: _Sample) -> bool:
        """The request's :class:`~infscale.types.ConfidenceStop` after the newest token (a running
        sum over the window; the same reading as ``ConfidenceStop.first_stop``)."""
        w, conf = s.rule.window, s.conf
        s.window_sum += conf[-1]
        if len(conf) > w:
            s.window_sum -= conf[-1 - w]
        return len(conf) >= w and s.window_sum / w < s.rule.threshold

    def _finish(self, s: _Sample, reason: str, stop: str | None, pending: list[int], cut: int | None = None) -> None:
        text = s.text.decode("utf-8", errors="replace")
        if cut is not None:
            text = s.text.decode("utf-8", errors="ignore")[:cut]
        handle = None
        sid, s.seq_id = s.seq_id, -1  # the id now belongs to the handle, or is free again
        if s.keep and not s.future.cancelled():
            handle = SeqHandle(sid, s.n_past, pending, reason == "stop" and stop is None, self._engine_id, s.prompt_tokens,
                               grammar=s.grammar)
            s.grammar = None  # the handle owns it now
        else:
            self._release(sid)
            s.drop_grammar()
        c = Completion(
            text=text, finish_reason=reason, prompt_tokens=s.prompt_tokens, generated_tokens=len(s.tokens),
            token_ids=s.tokens, logprobs=s.logprobs, sampled_logprobs=s.sampled_logprobs, top_logprobs=s.top,
            stop=stop, seed=s.seed, handle=handle, confidences=s.conf, self_certainties=s.sc,
        )
        if not _set(s.future, result=c) and handle is not None:
            self._release(sid)
            if handle.grammar is not None:
                handle.grammar.free()

    def _decode_failed(self, rc: int) -> None:
        """No room in the KV cache (rc 1) or an error: put prompt reads back, fail the longest."""
        if self._jobs_reading:
            job = self._jobs_reading.pop()
            for s in job.samples:
                self._release(s.seq_id)
                s.drop_grammar()
                _set(s.future, exc=BackendError(f"llama_decode returned {rc}: the KV cache ({self.n_ctx} cells) is full; raise n_ctx or lower n", retryable=True))
            # the other jobs' reads in this batch were not applied: restart them
            for j in self._jobs_reading:
                self._ll.llama_memory_seq_rm(self._mem, j.leader.seq_id, -1, -1)
                j.leader.n_past = j.parent.n_past if j.parent else 0
                if j.parent is not None:
                    self._ll.llama_memory_seq_cp(self._mem, j.parent.seq_id, j.leader.seq_id, -1, -1)
                j.read = 0
            return
        if self._live:
            s = max(self._live, key=lambda x: x.n_past)
            self._live.remove(s)
            self._finish(s, "length", None, pending=[])

    def _fail_all(self, exc: Exception, include_queue: bool = False) -> None:
        for s in self._live:
            _set(s.future, exc=exc)
        for job in self._jobs_reading:
            for s in job.samples:
                _set(s.future, exc=exc)
        if include_queue:
            for job in self._queue:
                for s in job.samples:
                    _set(s.future, exc=exc)
            for job in self._inbox:
                for s in job.samples:
                    _set(s.future, exc=exc)
            self._queue.clear()
            self._inbox.clear()
        for s in self._live:
            if s.seq_id >= 0:
                self._release(s.seq_id)
            s.drop_grammar()
        for job in self._jobs_reading:
            for s in job.samples:
                if s.seq_id >= 0:
                    self._release(s.seq_id)
                s.drop_grammar()
        self._live = []
        self._jobs_reading = []


@dataclass
class _Profile:
    """Seconds the scheduler spent in each part of its steps (read by bench/concurrency.py)."""

    decode: float = 0.0  # inside llama_decode
    logits: float = 0.0  # reading the logits out of llama.cpp
    sampling: float = 0.0  # drawing tokens
    bookkeeping: float = 0.0  # filling the batch, stop strings, finishing, forks
    steps: int = 0
    rows: int = 0  # logit rows sampled from
    runs: int = 0  # runs of consecutive sequence ids among the decoding samples, summed over steps
    moves: int = 0  # samples moved to a lower sequence id (per-sequence streams only)

    def as_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in ("decode", "logits", "sampling", "bookkeeping", "steps", "rows", "runs",
                                              "moves")}


def _id_runs(ids: list[int]) -> int:
    """Runs of consecutive values among ``ids`` (in the order given): the micro-batches llama.cpp
    makes of a decode batch on per-sequence streams."""
    return sum(1 for i, v in enumerate(ids) if i == 0 or v != ids[i - 1] + 1)


def _set(fut: cf.Future, result: Any = None, exc: BaseException | None = None) -> bool:
    """Resolve a future unless the caller cancelled it; True if resolved."""
    if fut.done():
        return False
    try:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)
        return True
    except cf.InvalidStateError:
        return False
