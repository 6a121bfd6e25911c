"""reward=remote: a reward over HTTP in OpenRLHF's protocol, against rlhand-serve-reward and a
minimal stand-alone server; each fault a user can meet is one line naming the URL."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from rlhand.data.tokenizer import build_char_tokenizer
from rlhand.errors import RewardError
from rlhand.rewards.function import FunctionScorer
from rlhand.rewards.remote import RemoteScorer
from rlhand.rewards.serve import function_scorer, make_server
from rlhand.stages import build_run
from rlhand.tasks.letters import letters_reward
from tests.conftest import FAST, compose_cfg


def serving(server):
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{server.server_address[1]}/get_reward"


@pytest.fixture
def project_server():
    server = make_server(function_scorer("rlhand.tasks.letters.letters_reward"))
    yield serving(server)
    server.shutdown()


def standalone(answer):
    """A server written to OpenRLHF's protocol alone: answer(body) -> (status, bytes)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            status, data = answer(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


def batch(tokenizer):
    prompts = ["abcdefgh=", "qbkxmcwe="] * 4
    responses = ["abc", "zzz", "", "qq", "a b", "xm", "hgf", "cw"]
    prompt_ids = torch.tensor([tokenizer(p)["input_ids"] for p in prompts])
    rows = [tokenizer(r, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for r in responses]
    width = max(map(len, rows))
    response_ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    response_mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return prompt_ids, torch.ones_like(prompt_ids), response_ids, response_mask, torch.ones(8, dtype=torch.bool)


def test_remote_scores_equal_local_ones(project_server):
    tokenizer = build_char_tokenizer()
    local = FunctionScorer(letters_reward, tokenizer)(*batch(tokenizer))
    remote = RemoteScorer(project_server, tokenizer, request_size=3, in_flight=2)(*batch(tokenizer))  # 3 requests, 2 at once
    assert remote.tolist() == local.tolist()


def test_a_run_against_the_project_s_server_is_the_run_with_the_local_function(project_server, tmp_path):
    local = build_run(compose_cfg(FAST), tmp_path / "local").fit()
    remote = build_run(compose_cfg(FAST + ["reward=remote", f"reward.url={project_server}"]), tmp_path / "remote").fit()
    assert [r["reward/mean"] for r in remote] == [r["reward/mean"] for r in local]


def test_a_run_against_a_stand_alone_openrlhf_style_server_trains(tmp_path):
    server = standalone(lambda body: (200, json.dumps({"rewards": [float(len(q) % 3) for q in body["query"]]}).encode()))
    url = serving(server)
    try:
        history = build_run(compose_cfg(FAST + ["reward=remote", f"reward.url={url}"]), tmp_path).fit()
    finally:
        server.shutdown()
    assert len(history) == 2 and all(0 <= r["reward/mean"] <= 2 for r in history)


def test_a_server_that_is_not_up_is_one_line_before_models_load(tmp_path, monkeypatch):
    monkeypatch.setattr("rlhand.stages.ppo.setup.build_models", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(RewardError, match=r"^reward.url: cannot reach http://127.0.0.1:9/x: Connection refused$"):
        build_run(compose_cfg(FAST + ["reward=remote", "reward.url=http://127.0.0.1:9/x"]), tmp_path)


def test_a_url_that_is_not_http_is_a_config_error():
    with pytest.raises(ValueError, match=r"reward.url: reward=remote needs an http:// or https:// URL, not 'ftp://x'"):
        compose_cfg(["reward=remote", "reward.url=ftp://x"])


@pytest.mark.parametrize(
    "answer, message",
    [
        (lambda body: (200, b"{not json"), r"answered with malformed JSON"),
        (lambda body: (200, json.dumps({"rewards": [1.0]}).encode()), r"the reward server http://.* returned 1 scores for 8 samples"),
        (lambda body: (200, json.dumps({"scores": [1.0] * 8}).encode()), r"answered without a 'rewards' list"),
        (lambda body: (500, b"boom"), r"HTTP 500 .* \(after 1 retries\)"),
    ],
)
def test_a_bad_answer_is_one_line_naming_the_url(answer, message, monkeypatch):
    monkeypatch.setattr("rlhand.rewards.remote.BACKOFF_S", 0.01)
    server = standalone(answer)
    url = serving(server)
    tokenizer = build_char_tokenizer()
    try:
        with pytest.raises(RewardError, match=message) as err:
            RemoteScorer(url, tokenizer, retries=1)(*batch(tokenizer))
    finally:
        server.shutdown()
    assert url in str(err.value) and "\n" not in str(err.value)


def test_a_slow_server_is_retried_then_named(monkeypatch, capfd):
    monkeypatch.setattr("rlhand.rewards.remote.BACKOFF_S", 0.01)
    calls = []

    def slow(body):
        calls.append(1)
        time.sleep(0.5)
        return 200, json.dumps({"rewards": [0.0] * len(body["query"])}).encode()

    server = standalone(slow)
    url = serving(server)
    tokenizer = build_char_tokenizer()
    try:
        with pytest.raises(RewardError, match=rf"^reward.url: {url}: no answer within reward.timeout_s \(after 2 retries\)$"):
            RemoteScorer(url, tokenizer, timeout_s=0.1, retries=2)(*batch(tokenizer))
    finally:
        server.shutdown()
    assert len(calls) == 3
    assert capfd.readouterr().err.count("retry") == 2


def test_a_server_dying_mid_run_stops_the_run_with_one_line_and_the_checkpoint_named(tmp_path):
    import subprocess
    import sys

    served = {"n": 0}

    def dies_after_two(body):
        served["n"] += 1
        if served["n"] > 2:  # iterations 1 and 2 are scored, then the server is gone
            threading.Thread(target=server.shutdown, daemon=True).start()
            return 500, b"going away"
        return 200, json.dumps({"rewards": [0.5] * len(body["query"])}).encode()

    server = standalone(dies_after_two)
    url = serving(server)
    args = [sys.executable, "-m", "rlhand.train", *FAST, "trainer.max_steps=4", "checkpoint.every=1", "reward=remote", f"reward.url={url}", "reward.retries=1", f"hydra.run.dir={tmp_path}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"rlhand-train: error: reward.url: {url}") and "step_2" in last, last
