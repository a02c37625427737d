"""Every subject, stream, consumer and bucket name, in one place.

Publishers, subscribers and tests import these; nothing else spells a subject.
"""

# ---- goals: researcher -> planner (JetStream, work must not be lost) ----
GOALS_STREAM = "GOALS"
GOALS_SUBJECT = "research.goals"
GOALS_CONSUMER = "planner"
# a goal submitted as a request: a planner checks it and answers (GoalAnswer), queuing it on GOALS
GOAL_SUBMIT_SUBJECT = "research.submit"
PLANNER_QUEUE = "planners"

# ---- request/reply work (core NATS; the planner retries from its persisted state) ----
ASSEMBLE_SUBJECT = "research.assemble"
SUMMARY_SUBJECT = "research.assemble.summary"  # the tools LLM's reading of validated code
VALIDATE_SUBJECT = "research.sandbox.validate"
ASSEMBLER_QUEUE = "assemblers"
SANDBOX_QUEUE = "sandboxes"

# ---- evaluation jobs: planner -> evaluators (JetStream work queue, one job per seed) ----
EVAL_STREAM = "EVAL"
EVAL_SUBJECT = "research.eval.jobs"
EVAL_CONSUMER = "evaluators"

# ---- per-seed results: evaluators -> planner (JetStream) ----
RESULTS_STREAM = "RESULTS"
RESULTS_SUBJECT_PREFIX = "research.results"
RESULTS_CONSUMER = "planner-results"

# ---- dead letters: jobs that exhausted their deliveries ----
DEAD_STREAM = "DEAD"
DEAD_LETTER_SUBJECT = "research.dead"
# JetStream's advisory when an evaluation job reaches max_deliver; kept in a stream of its own so a
# planner that is down at that moment still learns of it when it comes back
EVAL_MAX_DELIVERIES_ADVISORY = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{EVAL_STREAM}.{EVAL_CONSUMER}"
ADVISORIES_STREAM = "EVAL_ADVISORIES"
DEAD_LETTERS_CONSUMER = "planner-dead-letters"

# ---- progress events, one subject per run (core NATS, for live followers) ----
EVENTS_PREFIX = "research.events"
# a run has ended: evaluators drop its jobs still queued (candidates in flight when it ended)
RUN_ENDED_SUBJECT = "research.runs.ended"
# stop a run by hand (`researcher stop`): a request every planner replica hears; the one driving it answers
STOP_SUBJECT = "research.runs.stop"
# steer a run by hand (stop, pause, resume, queue a config): SteerRequest, answered by the planner
# replica driving the run; STOP_SUBJECT stays for older CLIs
STEER_SUBJECT = "research.runs.steer"

# ---- registry (JetStream KV + object store) ----
RUNS_BUCKET = "research_runs"
ITERATIONS_BUCKET = "research_iterations"
ARTIFACTS_BUCKET = "research_artifacts"
# trained weights, which evaluators put (an object store of their own: an evaluator may write here
# and nowhere else in the registry); readers find them by the name a seed result gives
WEIGHTS_BUCKET = "research_weights"
LEASES_BUCKET = "research_run_leases"  # which planner replica drives which run (keys expire)
# an index for the lease scan: one key per run whose status is running, so it reads no record
RUNNING_BUCKET = "research_running_runs"
# in RUNNING_BUCKET, written once the runs stored before the index existed are entered in it (a dot:
# never a run id)
RUNNING_INDEXED_KEY = "index.backfilled"


def results_subject(run_id: str) -> str:
    return f"{RESULTS_SUBJECT_PREFIX}.{run_id}"


def events_subject(run_id: str) -> str:
    return f"{EVENTS_PREFIX}.{run_id}"


def dead_job_subject(run_id: str) -> str:
    """Where a dead-lettered evaluation job is kept, for inspection and replay."""
    return f"{DEAD_LETTER_SUBJECT}.eval.{run_id}"
