"""rlhand-serve-reward: serve a reward function or a reward-model folder over HTTP in OpenRLHF's
remote reward protocol (POST {"query": [...], "prompts": [...], "labels": [...]} -> {"rewards":
[...]}), for reward=remote. A function gets the labels as `labels` when the client sends them. Python's own threading HTTP server: no dependency, one request per thread.

    rlhand-serve-reward --function rlhand.tasks.letters.letters_reward --port 5000
    rlhand-serve-reward --model runs/rm/final/reward_model --port 5000
"""

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

from rlhand.errors import UserError
from rlhand.rewards.function import checked_scores, resolve_reward_function
from rlhand.user_code import import_from_working_directory


def function_scorer(target: str, failure_score: float = 0.0):
    """A function's scores; a sample it returns as Unscored (a label a grader cannot read) scores
    `failure_score`, said on this server's stderr (the protocol has no place for it)."""
    fn = resolve_reward_function({"_target_": target}, "--function")

    said = []

    def unscored(i: int, reason: str) -> float:
        if len(said) < 3:  # the first few, named; the rest only scored
            said.append(reason)
            print(f"rlhand-serve-reward: {target}: sample {i} of a request: {reason}; scored {failure_score:g}", file=sys.stderr, flush=True)
        return failure_score

    def score(queries: list[str], prompts: list[str], labels: list | None = None) -> list[float]:
        responses = [q[len(p) :] if q.startswith(p) else q for q, p in zip(queries, prompts)]
        return checked_scores(fn(prompts, responses, **({"labels": labels} if labels is not None else {})), responses, target, unscored)

    return score


def model_scorer(folder: str):
    """The folder's *ForSequenceClassification model on each query's text and EOS, with its tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    lock = threading.Lock()  # one forward at a time: torch's threads already use the cores

    @torch.no_grad()
    def score(queries: list[str], prompts: list[str], labels: list | None = None) -> list[float]:
        scores = []
        with lock:
            for text in queries:
                ids = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
                scores.append(model(input_ids=torch.tensor([ids])).logits[0, 0].item())
        return scores

    return score


def make_server(score, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                queries, prompts = body["query"], body.get("prompts") or [""] * len(body["query"])
                answer, status = {"rewards": score(queries, prompts, body.get("labels"))}, 200
            except (ValueError, KeyError, TypeError, UserError) as err:
                answer, status = {"error": str(err)}, 400
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):  # quiet: one line per request is noise at RL rates
            pass

    return ThreadingHTTPServer((host, port), Handler)


def main() -> None:
    parser = argparse.ArgumentParser(prog="rlhand-serve-reward", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--function", help="module.function taking (prompts, responses) and returning one number each")
    source.add_argument("--model", help="a *ForSequenceClassification folder with its tokenizer (num_labels=1)")
    parser.add_argument("--failure-score", type=float, default=0.0, help="the score of a sample the function returns as Unscored")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    import_from_working_directory()
    try:
        score = function_scorer(args.function, args.failure_score) if args.function else model_scorer(args.model)
    except (UserError, OSError, ValueError) as err:
        sys.exit(f"rlhand-serve-reward: error: {str(err).splitlines()[0]}")
    server = make_server(score, args.host, args.port)
    print(f"rlhand-serve-reward: serving on http://{args.host}:{server.server_address[1]}/ (POST query, prompts -> rewards)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
