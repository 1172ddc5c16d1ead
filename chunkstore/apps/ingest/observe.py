"""What ingest tells its operators: one structured JSON log line per object and CloudWatch
metrics in Embedded Metric Format, both written by aws-lambda-powertools to stdout, where
Lambda hands them to CloudWatch Logs (which turns the EMF lines into metrics: no
PutMetricData call and no permission for it).

aws-lambda-powertools is the `lambda` extra (`pip install 'chunkstore[lambda]'`); the rest
of chunkstore, and `chunkstore ingest` with text output, work without it.
"""

from __future__ import annotations

import logging
import sys

from chunkstore.errors import ChunkstoreError

SERVICE = "chunkstore-ingest"
NAMESPACE = "Chunkstore"
INSTALL_HINT = "pip install 'chunkstore[lambda]'"

# Outcomes that mean an object was read into the store.
INGESTED = ("stored", "duplicate")


def _powertools():
    try:
        import aws_lambda_powertools
    except ImportError:
        raise ChunkstoreError(f"JSON logs and metrics need aws-lambda-powertools: {INSTALL_HINT}") from None
    return aws_lambda_powertools


class _CurrentStdout(logging.StreamHandler):
    """Writes to sys.stdout as it is at each line, not as it was when the logger was made
    (the logger lives for the process; a test or a CLI run may redirect stdout meanwhile)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _value) -> None:
        pass


_made: list = []


def _logger():
    """The one powertools Logger of the process: a second Logger of the same service reuses the
    first one's logging setup but not its formatter, so it is made once."""
    if not _made:
        _made.append(_powertools().Logger(service=SERVICE, logger_handler=_CurrentStdout()))
    return _made[0]


class Observer:
    """One JSON log line per object; with metrics=True also the EMF metrics, sent by flush()."""

    def __init__(self, *, metrics: bool) -> None:
        self.logger = _logger()
        self.logger.remove_keys(["request_id"])
        self.metrics = None
        if metrics:
            from aws_lambda_powertools.metrics import MetricUnit

            self._unit = MetricUnit
            self.metrics = _powertools().Metrics(namespace=NAMESPACE, service=SERVICE)
        self._counted = False

    @classmethod
    def for_invocation(cls, context) -> Observer:
        """The observer of one Lambda invocation: metrics on, its request ID on every line."""
        observer = cls(metrics=True)
        request_id = getattr(context, "aws_request_id", None)
        if request_id:
            observer.context(request_id=request_id)
        return observer

    def context(self, **keys) -> None:
        """Keys added to every following line (the Lambda request ID)."""
        self.logger.append_keys(**keys)

    def result(self, result) -> None:
        """Log one IngestResult and count it."""
        fields = result.to_json()
        message = fields.pop("message")
        if result.outcome == "error":
            self.logger.error(message, extra=fields)
        elif result.reason.startswith("malformed") or result.outcome == "deferred":
            # Someone has to look at these: a sender of bad events, an object for the batch path.
            self.logger.warning(message, extra=fields)
        else:
            self.logger.info(message, extra=fields)
        if self.metrics is not None:
            self._count(self.metrics, result)
            self._counted = True

    def _count(self, metrics, result) -> None:
        count, byte, ms = self._unit.Count, self._unit.Bytes, self._unit.Milliseconds
        add = metrics.add_metric
        if result.outcome in INGESTED:
            add(name="FilesProcessed", unit=count, value=1)
            add(name="BytesIngested", unit=byte, value=result.size)
            add(name="BytesSaved", unit=byte, value=max(result.size - result.new_bytes, 0))
            add(name="Duration", unit=ms, value=result.duration_ms)
            if result.outcome == "duplicate":
                add(name="DuplicatesDetected", unit=count, value=1)
        elif result.outcome == "error":
            add(name="Errors", unit=count, value=1)
        elif result.outcome == "deferred":
            add(name="ObjectsDeferred", unit=count, value=1)
        else:
            add(name="ObjectsSkipped", unit=count, value=1)

    def flush(self) -> None:
        # An invocation that handled no object (an empty batch) has nothing to publish.
        if self.metrics is not None and self._counted:
            self.metrics.flush_metrics(raise_on_empty_metrics=False)
            self._counted = False
