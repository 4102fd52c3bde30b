"""Fake generators and scorers for tests: deterministic, seeded, no downloads.

:class:`FakeGenerator` answers each request with ``reply(request, rng)`` where ``rng`` is seeded
by the request's own seed, so the same seed gives the same text whatever the batch; token counts
are whitespace words. ``yes_prob(request)`` drives self-evaluation: a request asking for top
logprobs gets ``{"Yes": log p, "No": log(1 - p)}`` at its first position.
:func:`answer_model` builds the classic test model: the right answer with probability ``p``,
otherwise one of ``wrong`` answers uniformly. :class:`ForkingFakeGenerator` adds the embedded
engine's trajectory handles (``keep``/``parent``/``free``) and tracks every handle it hands out,
so a test can assert that a strategy frees all of them.

Token confidence (``GenRequest.confidence``) is scripted: ``confidence(request, words) ->
one float per word`` (default :func:`flat_confidence`, 10.0 for every token), and a request's
``stop_rule`` cuts the reply exactly where
:meth:`ConfidenceStop.first_stop <infscale.types.ConfidenceStop.first_stop>` says, with
``finish_reason="confidence"`` and only the words up to the cut counted (a rule that first
holds at the reply's last word leaves its natural finish).

Self-certainty (``GenRequest.self_certainty``) is scripted the same way:
``self_certainty(request, words) -> one float per word`` (default :func:`flat_self_certainty`,
1.0 per token); the fake reports it as exact (``capabilities.self_certainty == "exact"``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np

from ..tasks import get_task
from ..backends.base import Capabilities, Generator
from ..errors import ConfigError
from ..scorers.base import Scorer, prob_to_logscore
from ..types import Completion, GenRequest

__all__ = ["FakeGenerator", "answer_model", "flat_confidence", "flat_self_certainty", "OracleScorer", "FakeStepModel", "FakePotential", "ForkingFakeGenerator",
           "FakeHandle"]


def answer_model(p_correct: float, correct: str = "42", wrong: Sequence[str] = ("7", "13", "99")) -> Callable:
    """A reply function: 'Answer: correct' with probability p_correct, else a uniform wrong one."""

    def reply(req: GenRequest, rng: np.random.Generator) -> str:
        if req.prefix.startswith("some work\n"):  # a step-level continuation: the answer line
            head = ""
        else:
            head = "some work\n"
        if rng.random() < p_correct:
            return f"{head}Answer: {correct}"
        return f"{head}Answer: {wrong[int(rng.integers(len(wrong)))]}"

    return reply


def flat_confidence(req: GenRequest, words: list[str]) -> list[float]:
    """The default scripted token confidence: 10.0 for every token."""
    return [10.0] * len(words)


def flat_self_certainty(req: GenRequest, words: list[str]) -> list[float]:
    """The default scripted self-certainty: 1.0 for every token."""
    return [1.0] * len(words)


class FakeGenerator(Generator):
    """A scripted generator with the real protocol (ordered, batch-first, cancellable)."""

    name = "fake"
    model_name = "fake"  # the model it stands for (the `auto` strategy reads the policy of this name)

    def __init__(self, reply: Callable[[GenRequest, np.random.Generator], str] | None = None, *,
                 yes_prob: Callable[[GenRequest], float] | None = None, chat: bool = True, delay: float = 0.0,
                 confidence: Callable[[GenRequest, list[str]], list[float]] | None = None,
                 self_certainty: Callable[[GenRequest, list[str]], list[float]] | None = None):
        self.reply = reply or answer_model(1.0)
        self.yes_prob = yes_prob or (lambda req: 0.5)
        self.confidence = confidence or flat_confidence
        self.self_certainty = self_certainty or flat_self_certainty
        self.capabilities = Capabilities(chat_template=chat, kv_fork=False, confidence=True, self_certainty="exact")
        self.delay = delay
        self.calls = 0
        self.started = 0  # generate() calls begun (a delayed call counts before it finishes)
        self.cancelled = 0

    def _one(self, r: GenRequest) -> Completion:
        self.calls += 1
        seed = r.seed if r.seed is not None else r.params.seed
        if r.params.top_logprobs:
            p = min(max(self.yes_prob(r), 1e-9), 1 - 1e-9)
            top = [{"Yes": math.log(p), "No": math.log(1 - p)}]
            tok = "Yes" if p >= 0.5 else "No"
            return Completion(text=tok, finish_reason="length", prompt_tokens=10, generated_tokens=1,
                              logprobs=[max(top[0].values())], sampled_logprobs=[0.0], top_logprobs=top, seed=seed,
                              confidences=self._confidences(r, [tok]) if r.confidence else None)
        text = self.reply(r, np.random.default_rng(seed))
        stop = None
        hits = [(text.find(x), x) for x in r.params.stop if x in text]
        if hits:
            cut, stop = min(hits)
            text = text[:cut]
        words = text.split()[: r.params.max_tokens]
        finish = "length" if len(text.split()) > r.params.max_tokens else "stop"
        if finish == "length":
            text, stop = " ".join(words), None
        confs = None
        if r.confidence:
            confs = self._confidences(r, words)
            cut = r.stop_rule.first_stop(confs) if r.stop_rule is not None else None
            if cut is not None and cut < len(words):
                words, confs = words[:cut], confs[:cut]
                text, stop, finish = " ".join(words), None, "confidence"
        n = max(1, len(words))
        if confs is not None and not confs:
            confs = self._confidences(r, [""])  # an empty reply still counts one token
        scs = None
        if r.self_certainty:
            scs = self._scripted(self.self_certainty, r, words or [""], "self-certainty")
        return Completion(text=text, finish_reason=finish, prompt_tokens=10, generated_tokens=n,
                          logprobs=[-0.5] * n, sampled_logprobs=[-0.5] * n, seed=seed, stop=stop,
                          confidences=confs, self_certainties=scs)

    @staticmethod
    def _scripted(fn, r: GenRequest, words: list[str], what: str) -> list[float]:
        vals = [float(c) for c in fn(r, words)]
        if len(vals) != len(words):
            raise ValueError(f"the scripted {what} gave {len(vals)} values for {len(words)} tokens")
        return vals

    def _confidences(self, r: GenRequest, words: list[str]) -> list[float]:
        confs = [float(c) for c in self.confidence(r, words)]
        if len(confs) != len(words):
            raise ValueError(f"the scripted confidence gave {len(confs)} values for {len(words)} tokens")
        return confs

    async def generate(self, requests: list[GenRequest]) -> list[Completion]:
        self.started += 1
        outs = []
        for r in requests:
            if self.delay:
                try:
                    await asyncio.sleep(self.delay)
                except asyncio.CancelledError:
                    self.cancelled += 1
                    raise
            outs.append(self._one(r))
        return outs


class OracleScorer(Scorer):
    """Scores with the problem's reference: log 1 if the extracted answer is right, else
    ``log(false_positive_rate)`` — an imperfect verifier with a known error rate. As a process
    scorer it judges a step only when the step states an answer (others score 0)."""

    name = "oracle"
    process_capable = True

    async def score_steps(self, problem, prefixes, steps, meter):
        outs = await self.score(problem, steps, meter)
        return [o if "answer" in s.lower() else 0.0 for o, s in zip(outs, steps)]

    def __init__(self, false_positive_rate: float = 0.0):
        self.fpr = false_positive_rate

    async def score(self, problem, texts, meter):
        task = get_task(problem.task)
        out = []
        for t in texts:
            ok = task.is_correct(task.extract(t), problem.reference)
            out.append(0.0 if ok else prob_to_logscore(self.fpr))
        return out


class FakeStepModel(FakeGenerator):
    """A model whose distribution over step sequences is known exactly.

    ``next_steps(steps) -> {step: probability}`` gives the next step's distribution after the
    steps so far (read back from the request's ``prefix``, one step per line); a step starting
    with ``"Answer:"`` ends the trajectory (end of text). :meth:`paths` enumerates every complete
    path with its probability, so a sampler's output can be compared with the exact target.
    """

    def __init__(self, next_steps: Callable[[tuple[str, ...]], dict[str, float]], **kw):
        super().__init__(self._reply, **kw)
        self.next_steps = next_steps

    @staticmethod
    def steps_of(prefix: str) -> tuple[str, ...]:
        return tuple(x for x in prefix.split("\n") if x.strip())

    def _reply(self, req: GenRequest, rng: np.random.Generator) -> str:
        steps = self.steps_of(req.prefix or "")
        dist = self.next_steps(steps)
        options = list(dist)
        p = np.array([dist[o] for o in options], dtype=np.float64)
        step = options[int(rng.choice(len(options), p=p / p.sum()))]
        return step if step.startswith("Answer:") else step + "\n"

    def paths(self, steps: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], float]]:
        """Every complete path (ending with an Answer step) and its probability."""
        out = []
        for step, p in self.next_steps(steps).items():
            if p <= 0:
                continue
            path = steps + (step,)
            if step.startswith("Answer:"):
                out.append((path, p))
            else:
                out.extend((q, p * pq) for q, pq in self.paths(path))
        return out


class FakePotential(Scorer):
    """A process scorer with a known log-potential ``g(steps_before, step)``."""

    name = "fake-potential"
    kind = "process"
    process_capable = True

    def __init__(self, g: Callable[[tuple[str, ...], str], float]):
        self.g = g
        self.calls = 0

    async def score_steps(self, problem, prefixes, steps, meter):
        self.calls += len(steps)
        return [float(self.g(FakeStepModel.steps_of(p), s.strip())) for p, s in zip(prefixes, steps)]


class FakeHandle:
    """A trajectory handle of :class:`ForkingFakeGenerator`: the text generated so far."""

    __slots__ = ("text", "freed", "id")

    def __init__(self, text: str, id: int):
        self.text, self.freed, self.id = text, False, id

    def __repr__(self) -> str:
        return f"FakeHandle({self.id}, freed={self.freed})"


class ForkingFakeGenerator(FakeGenerator):
    """A fake with ``kv_fork``, held to the embedded engine's handle contract.

    A ``keep=True`` request gets a :class:`FakeHandle` holding its text so far; a request with
    ``parent=handle`` continues that text after its ``prefix`` (several requests may fork one
    parent); :meth:`free` releases a handle (idempotent, like the engine). Forking a freed handle
    fails as the engine does. ``held`` is the set of handles handed out and not yet freed,
    ``handed_out`` how many there were in all. Replies come from ``reply`` as for
    :class:`FakeGenerator` (a request's ``prefix`` is the whole text so far)."""

    name = "fake-fork"

    def __init__(self, reply: Callable[[GenRequest, np.random.Generator], str] | None = None, **kw):
        super().__init__(reply, **kw)
        self.capabilities = dataclasses.replace(self.capabilities, kv_fork=True)
        self.held: set[FakeHandle] = set()
        self.handed_out = 0

    async def generate(self, requests: list[GenRequest]) -> list[Completion]:
        plain = []
        for r in requests:
            if r.parent is not None:
                if r.parent.freed:
                    raise ConfigError("parent", "the handle was already freed", "a live handle")
                r = dataclasses.replace(r, parent=None, prompt="(continued)", messages=None,
                                        prefix=r.parent.text + r.prefix)
            plain.append(r)
        outs = await super().generate(plain)
        for r, o in zip(plain, outs):
            if r.keep:
                self.handed_out += 1
                o.handle = FakeHandle(r.prefix + o.text + (o.stop or ""), self.handed_out)
                self.held.add(o.handle)
        return outs

    def free(self, handle) -> None:
        if handle is None or handle.freed:
            return
        handle.freed = True
        self.held.discard(handle)


def record_requests(gen) -> list[GenRequest]:
    """Wrap ``gen.generate`` so every request it is given is appended, in order, to the returned
    list (for tests that check what a strategy asked for)."""
    seen: list[GenRequest] = []
    inner = gen.generate

    async def generate(requests: list[GenRequest]) -> list[Completion]:
        seen.extend(requests)
        return await inner(requests)

    gen.generate = generate
    return seen
