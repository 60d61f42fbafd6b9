"""Unusable records: one exception type and the closed set of reasons it carries.

By default the pipeline skips such records and counts them by `reason`; in strict mode
it raises the `BadRecordError`, which names the file, the record id and the field.
"""

from __future__ import annotations

MISSING_IMAGE = "missing_image"  # the image file does not exist
CORRUPT_IMAGE = "corrupt_image"  # the image file exists but PIL cannot decode it
BAD_JSON = "bad_json"  # not a JSON object, wrong field types, roles out of order, unparsable line
NO_ASSISTANT_TURN = "no_assistant_turn"  # nothing to supervise
EMPTY_TEXT = "empty_text"  # an assistant reply (or a text-only question) is empty
TOO_LONG = "too_long"  # the image block, or the first reply, does not fit in max_length
MISSING_FACTS = "missing_facts"  # a factually augmented reward input without facts for its image
BAD_LABEL = "bad_label"  # a preference that is not 1 or 2, a caption_type / length_bonus of the wrong type

REASONS = (MISSING_IMAGE, CORRUPT_IMAGE, BAD_JSON, NO_ASSISTANT_TURN, EMPTY_TEXT, TOO_LONG, MISSING_FACTS, BAD_LABEL)


class BadRecordError(ValueError):
    """A record that cannot become a training example.

    Attributes: `path` (the source file), `record_id` (the record's "id", or `#<index>`),
    `field` (e.g. "image", "conversations[3].value"), `reason` (one of `REASONS`),
    `detail` (what was found and what was expected).
    """

    def __init__(self, path: str | None, record_id: str | None, field: str, reason: str, detail: str = ""):
        if reason not in REASONS:
            raise ValueError(f"unknown bad-record reason {reason!r}; expected one of {REASONS}")
        self.path = path
        self.record_id = record_id
        self.field = field
        self.reason = reason
        self.detail = detail
        super().__init__(self._message())

    def _message(self) -> str:
        where = f"{self.path or '<unknown file>'}, record {self.record_id if self.record_id is not None else '?'}"
        msg = f"{where}, field {self.field!r}: {self.reason}"
        return f"{msg}: {self.detail}" if self.detail else msg

    def with_context(self, path: str | None, record_id: str | None) -> "BadRecordError":
        """The same problem, located in a file and record (used by readers that know them)."""
        return BadRecordError(
            path if path is not None else self.path,
            record_id if record_id is not None else self.record_id,
            self.field,
            self.reason,
            self.detail,
        )

    def __reduce__(self):  # picklable across grain worker processes
        return (BadRecordError, (self.path, self.record_id, self.field, self.reason, self.detail))
