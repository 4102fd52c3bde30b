"""A fake OpenAI-compatible server for tests, standard library only.

::

    with FakeOpenAIServer(ignore_n=True) as srv:
        gen = OpenAIGenerator(srv.base_url)
        ...
        srv.requests  # every POST body received, in order (failed attempts included)

Replies are scripted and deterministic: ``reply(prompt_or_messages, body, index) -> str`` (the
prompt string or the messages list, the request body, the choice index). Tokens are the text
split before whitespace (``"Answer: 42"`` is ``["Answer:", " 42"]``), each with logprob -0.1;
``stop`` truncates before the first stop string and ``max_tokens`` truncates tokens. Prompt
tokens count the same way over a rendered chat (``<|role|> content <|end|>`` per message, then
``<|assistant|>`` unless the final assistant message is continued).

Quirks of real servers can be switched on: ``ignore_n`` (always one choice),
``ignore_max_completion_tokens``, ``ignore_continue_final_message``, ``logprobs=False`` (never
returns logprobs), ``usage=False`` (no usage block), ``fail_times``/``fail_status``/
``retry_after`` (the first k generation requests fail), ``status_for_bad`` (status for invalid
bodies), ``delay`` (seconds before answering, or a callable of the body) and ``reject`` (a
callable ``(path, body) -> (status, message) | None`` for scripted refusals). Like vLLM, each
choice carries ``stop_reason`` (the stop string that ended it, else null); ``stop_reason=False``
leaves the field out, as llama-cpp-python's server does.

Streaming: a body with ``"stream": true`` is answered as server-sent events, one chunk per
token (chat ``chat.completion.chunk`` deltas or completions text chunks, each with its logprobs
entry when asked), then a chunk with the finish reason, a usage chunk when
``stream_options.include_usage`` is set, and ``data: [DONE]``; ``stream_delay`` seconds pass
before each token. :attr:`FakeOpenAIServer.streams` records per streamed request how many
tokens were written and whether the client closed the stream before the end.
``token_confidence(tokens, body) -> one float per token`` scripts the top logprobs: every one
of the k alternatives at token i (the token itself first) then has log-probability ``-c_i``,
so DeepConf's confidence ``-(1/k) * sum`` of them is exactly ``c_i``.

Reward models, as vLLM serves them (``prm`` set: a callable from an input text to the
good-probability of each of its steps; see :mod:`infscale.scorers.reward_http`):

* ``POST /pooling`` ``{"model", "input": str | [str], "task"?}`` returns one
  ``{"index", "object": "pooling", "data": [[1 - p, p] per step]}`` per input (STEP pooling of a
  two-label PRM such as Qwen2.5-Math-PRM);
* ``POST /classify`` ``{"model", "input"}`` returns ``{"index", "label", "probs": [1 - p, p],
  "num_classes": 2}`` with ``p`` the last step's probability;
* ``POST /score`` (and ``/v1/score``) ``{"model", "text_1", "text_2"}`` returns
  ``{"index", "object": "score", "score": p}`` for the input ``text_1 + "\n\n" + text_2``.

``prm_malformed`` (a callable ``(path, body) -> response | None``) replaces a reward response
with a scripted (broken) one. Without ``prm`` these routes answer 400 "does not support".
"""

from __future__ import annotations

import io
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, fields, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

__all__ = ["Behaviour", "FakeOpenAIServer", "fake_tokens", "default_reply", "REWARD_PATHS", "FLAVOURS"]

_TOKEN_RE = re.compile(r"\s*\S+")


def fake_tokens(text: str) -> list[str]:
    """The fake server's tokenizer: pieces starting with their leading whitespace."""
    return _TOKEN_RE.findall(text)


def default_reply(prompt_or_messages: Any, body: dict, index: int) -> str:
    return "Answer: 42"


@dataclass
class Behaviour:
    reply: Callable[[Any, dict, int], str] = default_reply
    models: tuple[str, ...] = ("fake-model",)
    ignore_n: bool = False
    ignore_max_completion_tokens: bool = False
    ignore_continue_final_message: bool = False
    logprobs: bool = True
    usage: bool = True
    fail_times: int = 0
    fail_status: int = 503
    retry_after: float | None = None
    status_for_bad: int = 400
    delay: float | Callable[[dict], float] = 0.0
    reject: Callable[[str, dict], tuple[int, str] | None] | None = None
    max_temperature: float = 2.0
    token_logprob: float = -0.1
    stop_reason: bool = True
    prm: Callable[[str], list[float]] | None = None
    prm_malformed: Callable[[str, Any], Any] | None = None
    stream_delay: float = 0.0
    token_confidence: Callable[[list[str], dict], list[float]] | None = None
    reasoning_parser: bool = False  # chat: a reply's <think>...</think> goes to message.reasoning_content
    flavour: str = "generic"  # "vllm" or "sglang": the server's own routes and choice fields (FLAVOURS)
    version: str = "0.0.0-fake"


#: Servers the fake can stand for, as their API docs describe them: vLLM answers ``GET /version``
#: (``{"version"}``) and names the stop string in ``stop_reason``; SGLang answers ``GET
#: /get_server_info`` (its server arguments and ``version``) and ``GET /get_model_info``
#: (``{"model_path", "is_generation", ...}``) and names the stop in ``matched_stop``. Both honour
#: ``n``, ``continue_final_message``, logprobs and ``response_format``.
FLAVOURS = ("generic", "vllm", "sglang")

#: The reward-model routes, as vLLM serves them (outside /v1, except the legacy /v1/score).
REWARD_PATHS = ("/pooling", "/classify", "/score", "/v1/score")


class _BadRequest(Exception):
    pass


class FakeOpenAIServer:
    """The fake server; a context manager that serves on an ephemeral port of 127.0.0.1."""

    def __init__(self, behaviour: Behaviour | dict | None = None, **overrides: Any):
        if behaviour is None:
            behaviour = Behaviour()
        elif isinstance(behaviour, dict):
            behaviour = Behaviour(**behaviour)
        names = {f.name for f in fields(Behaviour)}
        unknown = set(overrides) - names
        if unknown:
            raise TypeError(f"unknown behaviour: {sorted(unknown)} (known: {sorted(names)})")
        self.behaviour = replace(behaviour, **overrides)
        self._lock = threading.Lock()
        self._requests: list[Any] = []
        self._dead = False
        self._calls: list[tuple[str, str, Any]] = []
        self._headers: list[dict[str, str]] = []
        self._failures_left = self.behaviour.fail_times
        self._streams: list[dict[str, Any]] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    # ---------------------------------------------------------------- lifecycle

    def _handler_class(self) -> type:
        """The request handler (a subclass may add routes by extending it)."""
        return _Handler

    def start(self) -> "FakeOpenAIServer":
        handler = type("_Handler", (self._handler_class(),), {"fake": self})
        from .fault_proxy import QuietHTTPServer  # noqa: PLC0415  (a client that left is no traceback)

        self._httpd = QuietHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def kill(self) -> None:
        """Die as a crashed server does: stop listening, and drop every open connection (a
        request on a kept-alive connection is answered by a reset, not served)."""
        self._dead = True
        self.stop()

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port it serves (or served, once stopped) on."""
        assert self._port is not None, "the server was never started"
        return self._port

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    # --------------------------------------------------------------- records

    @property
    def requests(self) -> list[Any]:
        """A snapshot of every POST body received, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def calls(self) -> list[tuple[str, str, Any]]:
        """A snapshot of every ``(method, path, body)`` received (GETs included)."""
        with self._lock:
            return list(self._calls)

    @property
    def headers(self) -> list[dict[str, str]]:
        """A snapshot of the request headers of every call, parallel to :attr:`calls`."""
        with self._lock:
            return [dict(h) for h in self._headers]

    @property
    def streams(self) -> list[dict[str, Any]]:
        """Per streamed request, in arrival order: ``{"sent": tokens written, "total": tokens
        of the reply, "closed_early": the client closed the stream before the end}``."""
        with self._lock:
            return [dict(x) for x in self._streams]

    def clear(self) -> None:
        with self._lock:
            self._streams.clear()
            self._requests.clear()
            self._calls.clear()
            self._headers.clear()

    def _record(self, method: str, path: str, body: Any, headers: dict[str, str] | None = None) -> None:
        with self._lock:
            self._calls.append((method, path, body))
            self._headers.append(dict(headers or {}))
            if method == "POST":
                self._requests.append(body)

    def _take_failure(self) -> bool:
        with self._lock:
            if self._failures_left > 0:
                self._failures_left -= 1
                return True
            return False

    # -------------------------------------------------------------- replies

    def _prompt_tokens_chat(self, body: dict) -> int:
        msgs = body["messages"]
        b = self.behaviour
        cont = bool(body.get("continue_final_message")) and not b.ignore_continue_final_message
        add_gen = body.get("add_generation_prompt", True) if not b.ignore_continue_final_message else True
        parts = []
        for i, m in enumerate(msgs):
            last = i == len(msgs) - 1
            parts.append(f"<|{m['role']}|> {m['content']}")
            if not (last and cont):
                parts.append("<|end|>")
        if not cont and add_gen:
            parts.append("<|assistant|>")
        return len(fake_tokens(" ".join(parts)))

    def _choice_tokens(self, text: str, body: dict, chat: bool) -> tuple[list[str], str, str | None]:
        b = self.behaviour
        stops = body.get("stop") or []
        if isinstance(stops, str):
            stops = [stops]
        finish = "stop"
        hits = [(text.find(s), i, s) for i, s in enumerate(stops) if s and s in text]
        matched = min(hits)[2] if hits else None
        if matched is not None:
            text = text[: text.find(matched)]
        tokens = fake_tokens(text)
        if chat and not b.ignore_max_completion_tokens and body.get("max_completion_tokens") is not None:
            limit = body["max_completion_tokens"]
        else:
            limit = body.get("max_tokens")
        if limit is not None and len(tokens) > limit:
            tokens = tokens[:limit]
            finish = "length"
            matched = None
        return tokens, finish, matched

    def _token_logprobs(self, tokens: list[str], k: int, body: dict) -> list[tuple[float, list[float]]]:
        """Per token: its logprob and the logprobs of its k-1 alternatives."""
        b = self.behaviour
        if b.token_confidence is None:
            return [(b.token_logprob, [-2.0 - j for j in range(1, k)]) for _ in tokens]
        confs = [float(c) for c in b.token_confidence(tokens, body)]
        if len(confs) != len(tokens):
            raise ValueError(f"token_confidence gave {len(confs)} values for {len(tokens)} tokens")
        return [(-c, [-c] * (k - 1)) for c in confs]

    def _logprobs_chat(self, tokens: list[str], k: int, body: dict) -> dict:
        content = []
        for t, (lp, alts) in zip(tokens, self._token_logprobs(tokens, k, body)):
            top = [{"token": t, "logprob": lp, "bytes": list(t.encode())}]
            top += [{"token": f" alt{j + 1}", "logprob": a, "bytes": None} for j, a in enumerate(alts)]
            content.append({"token": t, "logprob": lp, "bytes": list(t.encode()), "top_logprobs": top[:k]})
        return {"content": content}

    def _logprobs_completions(self, tokens: list[str], k: int, body: dict) -> dict:
        offsets, pos = [], 0
        for t in tokens:
            offsets.append(pos)
            pos += len(t)
        tops, lps = [], []
        for t, (lp, alts) in zip(tokens, self._token_logprobs(tokens, max(k, 1), body)):
            d = {t: lp}
            for j, a in enumerate(alts[: max(k, 1) - 1]):
                d[f" alt{j + 1}"] = a
            tops.append(d)
            lps.append(lp)
        return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}

    def answer(self, path: str, body: dict) -> dict:
        """The response body for a valid generation request."""
        b = self.behaviour
        chat = path.endswith("/chat/completions")
        n = 1 if b.ignore_n else int(body.get("n", 1) or 1)
        if chat:
            source: Any = body["messages"]
            prompt_tokens = self._prompt_tokens_chat(body)
        else:
            prompt = body["prompt"]
            source = prompt if isinstance(prompt, str) else prompt[0]
            prompt_tokens = len(fake_tokens(source))
        choices, generated = [], 0
        for i in range(n):
            tokens, finish, matched = self._choice_tokens(b.reply(source, body, i), body, chat)
            text = "".join(tokens)
            generated += len(tokens)
            choice: dict[str, Any] = {"index": i, "finish_reason": finish, "logprobs": None}
            if b.flavour == "sglang":
                choice["matched_stop"] = matched
            elif b.stop_reason:
                choice["stop_reason"] = matched
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
                if b.reasoning_parser and "</think>" in text:  # as vLLM/SGLang with --reasoning-parser
                    thinking, _, answer = text.partition("</think>")
                    choice["message"] = {"role": "assistant", "content": answer.lstrip(),
                                         "reasoning_content": thinking.replace("<think>", "", 1).strip()}
                if b.logprobs and body.get("logprobs"):
                    choice["logprobs"] = self._logprobs_chat(tokens, int(body.get("top_logprobs") or 0), body)
            else:
                choice["text"] = text
                if b.logprobs and body.get("logprobs") is not None and body.get("logprobs") is not False:
                    choice["logprobs"] = self._logprobs_completions(tokens, int(body["logprobs"]), body)
            choices.append(choice)
        resp: dict[str, Any] = {
            "id": f"fake-{int(time.time() * 1000)}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": choices,
        }
        if b.usage:
            resp["usage"] = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": generated,
                "total_tokens": prompt_tokens + generated,
            }
        return resp

    def stream_events(self, path: str, body: dict) -> tuple[list[dict], int]:
        """The server-sent events of a streamed answer (one choice) and how many token chunks
        lead them: per token a chunk, then the finish chunk, then usage (when asked)."""
        full = self.answer(path, dict(body, n=1))
        chat = path.endswith("/chat/completions")
        choice = full["choices"][0]
        text = choice["message"]["content"] if chat else choice["text"]
        tokens = fake_tokens(text)
        lp = choice.get("logprobs")
        head = {"id": full["id"], "created": full["created"], "model": full["model"],
                "object": "chat.completion.chunk" if chat else "text_completion"}
        events = []
        for i, t in enumerate(tokens):
            c: dict[str, Any] = {"index": 0, "finish_reason": None, "logprobs": None}
            if chat:
                c["delta"] = {"role": "assistant", "content": t} if i == 0 else {"content": t}
                if lp is not None:
                    c["logprobs"] = {"content": [lp["content"][i]]}
            else:
                c["text"] = t
                if lp is not None:
                    c["logprobs"] = {key: [lp[key][i]] for key in ("tokens", "token_logprobs", "top_logprobs",
                                                                   "text_offset")}
            events.append(dict(head, choices=[c]))
        last: dict[str, Any] = {"index": 0, "finish_reason": choice["finish_reason"], "logprobs": None}
        for key in ("stop_reason", "matched_stop"):
            if key in choice:
                last[key] = choice[key]
        if chat:
            last["delta"] = {}
        else:
            last["text"] = ""
        events.append(dict(head, choices=[last]))
        opts = body.get("stream_options") or {}
        if "usage" in full and isinstance(opts, dict) and opts.get("include_usage"):
            events.append(dict(head, choices=[], usage=full["usage"]))
        return events, len(tokens)

    def _record_stream(self, sent: int, total: int, closed_early: bool) -> None:
        with self._lock:
            self._streams.append({"sent": sent, "total": total, "closed_early": closed_early})

    def _step_probs(self, text: str) -> list[float]:
        probs = [float(p) for p in self.behaviour.prm(text)]  # type: ignore[misc]
        if not probs:
            raise _BadRequest("the input has no step (no step separator token)")
        return probs

    def answer_reward(self, path: str, body: dict) -> dict:
        """The response body for a valid reward-model request (vLLM's shapes)."""
        if path in ("/score", "/v1/score"):
            p = self._step_probs(f"{body['text_1']}\n\n{body['text_2']}")[-1]
            data: list[dict[str, Any]] = [{"index": 0, "object": "score", "score": p}]
            kind = "score"
        else:
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = []
            for i, text in enumerate(inputs):
                probs = self._step_probs(text)
                if path == "/pooling":
                    data.append({"index": i, "object": "pooling", "data": [[1.0 - p, p] for p in probs]})
                else:
                    data.append({"index": i, "label": "LABEL_1" if probs[-1] >= 0.5 else "LABEL_0",
                                 "probs": [1.0 - probs[-1], probs[-1]], "num_classes": 2})
            kind = "pool" if path == "/pooling" else "classify"
        texts = [body.get("text_1", ""), body.get("text_2", "")] if kind == "score" else (
            body["input"] if isinstance(body["input"], list) else [body["input"]])
        tokens = sum(len(fake_tokens(t)) for t in texts)
        return {
            "id": f"{kind}-{int(time.time() * 1000)}", "object": "list", "created": int(time.time()),
            "model": body["model"], "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
        }

    def validate_reward(self, path: str, body: Any) -> None:
        """Raise _BadRequest for an invalid reward-model body."""
        if not isinstance(body, dict):
            raise _BadRequest("the request body must be a JSON object")
        if not isinstance(body.get("model"), str):
            raise _BadRequest("'model' is a required string")
        if self.behaviour.prm is None:
            api = {"/pooling": "Pooling", "/classify": "Classification"}.get(path, "Score")
            raise _BadRequest(f"The model does not support {api} API")
        if path in ("/score", "/v1/score"):
            if not isinstance(body.get("text_1"), str) or not isinstance(body.get("text_2"), str):
                raise _BadRequest("'text_1' and 'text_2' must be strings")
            return
        inp = body.get("input")
        if not (isinstance(inp, str) or (isinstance(inp, list) and inp and all(isinstance(x, str) for x in inp))):
            raise _BadRequest("'input' must be a string or a non-empty list of strings")
        task = body.get("task")
        if task is not None and task not in ("token_classify", "classify", "embed", "token_embed", "plugin"):
            raise _BadRequest(f"unknown pooling task {task!r}")

    def validate(self, path: str, body: Any) -> None:
        """Raise _BadRequest with an OpenAI-like message for an invalid body."""
        b = self.behaviour

        def bad(msg: str) -> None:
            raise _BadRequest(msg)

        if not isinstance(body, dict):
            bad("the request body must be a JSON object")
        if not isinstance(body.get("model"), str):
            bad("'model' is a required string")
        chat = path.endswith("/chat/completions")
        if chat:
            msgs = body.get("messages")
            if not isinstance(msgs, list) or not msgs:
                bad("'messages' must be a non-empty list")
            for m in msgs:
                if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                    bad("each message needs a string 'role' and 'content'")
            if (
                body.get("continue_final_message")
                and not b.ignore_continue_final_message
                and body.get("add_generation_prompt", True)
            ):
                bad("continue_final_message and add_generation_prompt cannot both be true")
            if body.get("continue_final_message") and msgs[-1]["role"] != "assistant":
                if not b.ignore_continue_final_message:
                    bad("continue_final_message needs a final assistant message")
        else:
            prompt = body.get("prompt")
            if not (isinstance(prompt, str) or (isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str))):
                bad("'prompt' must be a string")
        t = body.get("temperature", 1.0)
        if not isinstance(t, (int, float)) or not 0 <= t <= b.max_temperature:
            bad(f"temperature must be between 0 and {b.max_temperature}, got {t!r}")
        top_p = body.get("top_p", 1.0)
        if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
            bad(f"top_p must be in (0, 1], got {top_p!r}")
        for key in ("n", "max_tokens", "max_completion_tokens"):
            v = body.get(key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                bad(f"{key} must be an integer >= 1, got {v!r}")
        stop = body.get("stop")
        if stop is not None and not isinstance(stop, str):
            if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
                bad("'stop' must be a string or a list of strings")
        if "seed" in body and body["seed"] is not None and not isinstance(body["seed"], int):
            bad("'seed' must be an integer")
        lp = body.get("logprobs")
        if chat:
            if lp is not None and not isinstance(lp, bool):
                bad("'logprobs' must be a boolean for chat completions")
            tl = body.get("top_logprobs")
            if tl is not None and (not isinstance(tl, int) or not 0 <= tl <= 20):
                bad("'top_logprobs' must be an integer in [0, 20]")
        elif lp is not None and (isinstance(lp, bool) or not isinstance(lp, int) or not 0 <= lp <= 20):
            bad("'logprobs' must be an integer in [0, 20] for completions")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10
    wbufsize = 1 << 16  # headers and body leave in one write...
    disable_nagle_algorithm = True  # ...at once (no 40 ms delayed-ACK stalls)
    fake: FakeOpenAIServer  # set on the per-server subclass

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    def _stream(self, path: str, body: dict) -> None:
        """Server-sent events, one write per event; a client that closes early is recorded."""
        fake = self.fake
        events, n_tokens = fake.stream_events(path, body)
        self.close_connection = True  # the end of the stream is the end of the connection
        sent = 0
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            for i, ev in enumerate(events):
                if i < n_tokens and fake.behaviour.stream_delay > 0:
                    time.sleep(fake.behaviour.stream_delay)
                self.wfile.write(f"data: {json.dumps(ev)}\n\n".encode())
                self.wfile.flush()
                if i < n_tokens:
                    sent += 1
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            fake._record_stream(sent, n_tokens, True)
            self.wfile = io.BytesIO()  # the client is gone: the handler's final flush goes nowhere
            return
        fake._record_stream(sent, n_tokens, False)

    def _error(self, status: int, message: str, etype: str = "invalid_request_error",
               headers: dict[str, str] | None = None) -> None:
        self._send(status, {"error": {"message": message, "type": etype, "param": None, "code": status}}, headers)

    def _dropped(self) -> bool:
        """A killed server's connection: reset, no answer."""
        if not self.fake._dead:
            return False
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return True

    def do_GET(self) -> None:
        fake = self.fake
        if self._dropped():
            return
        path = self.path.split("?", 1)[0].rstrip("/")
        fake._record("GET", path, None, dict(self.headers.items()))
        b = fake.behaviour
        if path == "/v1/models":
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "infscale-fake"} for m in fake.behaviour.models]
            self._send(200, {"object": "list", "data": data})
        elif b.flavour == "vllm" and path == "/version":
            self._send(200, {"version": b.version})
        elif b.flavour == "sglang" and path == "/get_server_info":
            self._send(200, {"model_path": b.models[0], "tp_size": 1, "disable_radix_cache": False,
                             "version": b.version})
        elif b.flavour == "sglang" and path == "/get_model_info":
            self._send(200, {"model_path": b.models[0], "tokenizer_path": b.models[0], "is_generation": True})
        else:
            self._error(404, f"no route for GET {path}", "not_found_error")

    def do_POST(self) -> None:
        fake = self.fake
        if self._dropped():
            return
        b = fake.behaviour
        path = self.path.split("?", 1)[0].rstrip("/")
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw or b"null")
        except ValueError:
            body = raw.decode("utf-8", "replace")
        fake._record("POST", path, body, dict(self.headers.items()))
        reward = path in REWARD_PATHS
        if path not in ("/v1/chat/completions", "/v1/completions") and not reward:
            self._error(404, f"no route for POST {path}", "not_found_error")
            return
        delay = b.delay(body) if callable(b.delay) and isinstance(body, dict) else b.delay
        if isinstance(delay, (int, float)) and delay > 0:
            time.sleep(delay)
        if fake._take_failure():
            headers = {"Retry-After": str(b.retry_after)} if b.retry_after is not None else None
            self._error(b.fail_status, f"scripted failure ({b.fail_status})", "server_error", headers)
            return
        try:
            fake.validate_reward(path, body) if reward else fake.validate(path, body)
        except _BadRequest as e:
            self._error(b.status_for_bad, str(e))
            return
        if body["model"] not in b.models:
            self._error(404, f"The model '{body['model']}' does not exist", "not_found_error")
            return
        if b.reject is not None:
            refusal = b.reject(path, body)
            if refusal is not None:
                self._error(refusal[0], refusal[1])
                return
        if not reward:
            if body.get("stream"):
                self._stream(path, body)
            else:
                self._send(200, fake.answer(path, body))
            return
        if b.prm_malformed is not None:
            broken = b.prm_malformed(path, body)
            if broken is not None:
                self._send(200, broken)
                return
        try:
            self._send(200, fake.answer_reward(path, body))
        except _BadRequest as e:
            self._error(b.status_for_bad, str(e))
