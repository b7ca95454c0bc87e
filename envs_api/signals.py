"""Registry upkeep on model signals: a deleted user's live instances close at once.
And settings the runtime reads at each use: handed to it at start and on a change."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.signals import setting_changed
from django.db.models.signals import pre_delete

OWNER_DELETED = "closed: the owner's account was deleted"


def close_instances_of_deleted_user(sender: Any, instance: Any, **kwargs: Any) -> None:
    """Close the user's live envs while their registry rows still exist.

    ``pre_delete`` runs before the rows cascade away (inside the delete's
    transaction: if the delete is rolled back, the rows stay active and the
    instances are rebuilt on their next use).
    """
    from envs_api import services  # Gymnasium loads only when a user is deleted

    services.close_owned(instance.pk, OWNER_DELETED)


def apply_isolation(setting: str | None = None, **kwargs: Any) -> None:
    """Hand GYM_ISOLATED_ENVS and GYM_ISOLATION_TIMEOUT to the runtime (new instances
    follow them; live ones keep how they were made)."""
    if setting not in (None, "GYM_ISOLATED_ENVS", "GYM_ISOLATION_TIMEOUT"):
        return
    from envs_api.runtime import envids

    envids.isolation_policy = envids.Isolation(
        tuple(settings.GYM_ISOLATED_ENVS), float(settings.GYM_ISOLATION_TIMEOUT)
    )


def connect() -> None:
    """Connect the receivers (``EnvsApiConfig.ready()``)."""
    pre_delete.connect(
        close_instances_of_deleted_user,
        sender=get_user_model(),
        dispatch_uid="gymsite-close-instances-of-deleted-user",
    )
    setting_changed.connect(apply_isolation, dispatch_uid="gymsite-isolation")
    apply_isolation()
