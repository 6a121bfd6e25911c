"""A reward served over HTTP, in OpenRLHF's remote reward protocol: POST JSON
{"query": [prompt + response text, ...], "prompts": [prompt text, ...], "labels": [...]} and read
{"rewards": [...]} (one number per query), so servers written for OpenRLHF work unchanged
(rlhand-serve-reward is one). `labels` (each prompt's ground truth, task.label_column) is sent when
the prompts have one; the texts are as a reward function gets them (rlhand/rewards/function.py).

Requests carry reward.request_size texts each, at most reward.in_flight at once; a failed or slow
request is retried reward.retries times with exponential backoff (each retry logged), then the run
stops with one line naming the URL (the run's error handling names the last checkpoint)."""

import json
import socket
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import torch
from torch import Tensor

from rlhand.errors import RewardError
from rlhand.rewards.function import checked_scores, decode_texts

BACKOFF_S = 0.5  # the first retry's wait; each next one doubles it


class RemoteScorer:
    def __init__(self, url: str, tokenizer, timeout_s: float = 30.0, retries: int = 3, request_size: int = 64, in_flight: int = 4, field: str = "reward.url"):
        self.url, self.tokenizer, self.timeout_s, self.retries, self.field = url, tokenizer, timeout_s, retries, field
        self.request_size, self.in_flight = request_size, in_flight

    def __call__(self, prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor, ended: Tensor, rows=None) -> Tensor:
        prompts, responses, _, _ = decode_texts(self.tokenizer, prompt_ids, prompt_mask, response_ids, response_mask, ended, rows)
        queries = [p + r for p, r in zip(prompts, responses)]
        labels = [row.label for row in rows] if rows and any(row.label is not None for row in rows) else None
        size = self.request_size
        parts = [(queries[i : i + size], prompts[i : i + size], labels[i : i + size] if labels else None) for i in range(0, len(queries), size)]
        with ThreadPoolExecutor(max_workers=self.in_flight) as pool:
            answers = list(pool.map(lambda part: self.request(*part), parts))
        scores = [s for answer in answers for s in answer]
        return torch.tensor(scores, dtype=torch.float32, device=response_ids.device)

    def request(self, queries: list[str], prompts: list[str], labels: list | None = None) -> list[float]:
        body = json.dumps({"query": queries, "prompts": prompts, **({"labels": labels} if labels is not None else {})}).encode()
        for attempt in range(self.retries + 1):
            try:
                request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                    raw = answer.read()
                return self.rewards_of(raw, queries)
            except (urllib.error.URLError, OSError, TimeoutError) as err:
                why = _reason(err)
                if attempt == self.retries:
                    raise RewardError(f"{self.field}: {self.url}: {why} (after {self.retries} retries)") from None
                wait = BACKOFF_S * 2**attempt
                print(f"rlhand: reward server {self.url}: {why}; retry {attempt + 1} of {self.retries} in {wait:g}s", file=sys.stderr, flush=True)
                time.sleep(wait)
        raise AssertionError("unreachable")

    def rewards_of(self, raw: bytes, queries: list[str]) -> list[float]:
        try:
            answer = json.loads(raw)
        except ValueError:
            raise RewardError(f"{self.field}: {self.url} answered with malformed JSON ({raw[:60]!r})") from None
        rewards = answer.get("rewards") if isinstance(answer, dict) else None
        if rewards is None:
            raise RewardError(f"{self.field}: {self.url} answered without a 'rewards' list ({str(answer)[:60]})")
        return checked_scores(rewards, queries, f"the reward server {self.url}")


def check_reachable(url: str, timeout_s: float = 5.0, field: str = "reward.url") -> None:
    """A TCP connection to the server's host and port, before any model loads: a server that is not
    up is one line now, not a failure after the first rollout."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout_s):
            pass
    except OSError as err:
        raise RewardError(f"{field}: cannot reach {url}: {_reason(err)}") from None


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        err = err.reason if isinstance(err.reason, BaseException) else err
    if isinstance(err, (TimeoutError, socket.timeout)):
        return "no answer within reward.timeout_s"
    return getattr(err, "strerror", None) or str(err) or type(err).__name__
