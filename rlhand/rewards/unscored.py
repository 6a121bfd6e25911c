"""What a reward function returns for a sample it cannot score (a label its verifier cannot read, a
test file it cannot run): `Unscored("why")` in that sample's place. The sample then scores
reward.failure_score, is counted in reward/errors, and the first few reasons are printed once;
reward.on_failure=stop ends the run on the first instead. Kept free of heavy imports: reward worker
processes and graders import it."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Unscored:
    reason: str

    def __str__(self) -> str:
        return self.reason
