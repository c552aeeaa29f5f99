"""Every Redis key and name the Redis engine and its workers use, in one place.

All keys are `<prefix>:<what>[:<id>]`, so one Redis can hold several deployments (or tests).
"""

from __future__ import annotations

from dataclasses import dataclass

GROUP = "workers"  # the consumer group every worker of a deployment joins
ASYNC_GROUP = "api"  # the consumer group every API process joins for `?async=true` requests


@dataclass(frozen=True)
class Keys:
    prefix: str = "vdis"

    def jobs(self, model: str) -> str:
        """Stream of one model's jobs, one per request: fields id, op (encode, decode, swap,
        generate), model, deadline_ms, payload (the arrays and the parameters,
        service.engine.wire). A stream per model: a worker reads only the models it serves."""
        return f"{self.prefix}:jobs:{model}"

    @property
    def dead(self) -> str:
        """Dead-letter stream: jobs delivered more than MAX_DELIVERIES times, and why."""
        return f"{self.prefix}:dead"

    def result(self, job_id: str) -> str:
        """String: the packed outputs (or the failure) of one job, with a TTL."""
        return f"{self.prefix}:result:{job_id}"

    def reply(self, job_id: str) -> str:
        """List the API request blocks on (BLPOP); a worker pushes once the result is set."""
        return f"{self.prefix}:reply:{job_id}"

    def worker(self, name: str) -> str:
        """String: one worker's heartbeat (JSON counts), expiring when it stops beating."""
        return f"{self.prefix}:worker:{name}"

    @property
    def worker_pattern(self) -> str:
        return f"{self.prefix}:worker:*"

    def async_job(self, job_id: str) -> str:
        """Hash: an `?async=true` HTTP request's state and, once done, its whole answer."""
        return f"{self.prefix}:async:{job_id}"

    @property
    def async_requests(self) -> str:
        """Stream of accepted `?async=true` HTTP requests (fields id, path, query, headers,
        body); API processes take them as a consumer group, so a dead one's are taken over."""
        return f"{self.prefix}:async-requests"
