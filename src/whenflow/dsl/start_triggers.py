"""`spec.triggers` entries, from their schema model to the domain (DESIGN.md §12)."""

from __future__ import annotations

from whenflow.domain.schedules import AfterTrigger, StartTrigger, WebhookTrigger
from whenflow.dsl.schema import TriggerModel


def start_trigger(model: TriggerModel) -> StartTrigger:
    """The trigger a validated `spec.triggers` entry declares (exactly one kind)."""
    inputs = dict(model.inputs)
    if model.webhook is not None:
        return WebhookTrigger(model.webhook.key, inputs)
    assert model.after is not None  # the model's validator allows nothing else
    statuses = tuple(dict.fromkeys(model.after.status))
    return AfterTrigger(model.after.pipeline, statuses, inputs)
