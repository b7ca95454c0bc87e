"""The registry: one row per environment instance, the truth about which exist."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.timezone import now


class EnvInstance(models.Model):
    """Registry row of one environment instance; the live env is in the cache."""

    class Status(models.TextChoices):
        ACTIVE = "active", "active"
        CLOSED = "closed", "closed"
        EXPIRED = "expired", "expired (idle)"

    instance_id = models.CharField(max_length=32, unique=True, editable=False)
    env_id = models.CharField(max_length=200, help_text="The Gymnasium id served.")
    requested_env_id = models.CharField(
        max_length=200,
        blank=True,
        help_text="The id the client asked for, when an alias mapped it.",
    )
    make_kwargs = models.JSONField(default=dict, blank=True)
    num_envs = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="A vector instance's number of sub-environments (v2); empty: one.",
    )
    vectorization_mode = models.CharField(
        max_length=8, blank=True, help_text="A vector instance's: sync or async."
    )
    host = models.CharField(
        max_length=120,
        blank=True,
        default="",
        help_text="Where the live env is (GYM_BACKEND=ray: host actor#incarnation); "
        "empty: in the server's process.",
    )
    # Up to 2**64 - 1: clients with unsigned 64-bit seeds (e.g. Rust's u64) exist.
    seed = models.DecimalField(max_digits=20, decimal_places=0, null=True, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        models.CASCADE,
        null=True,
        blank=True,
        related_name="env_instances",
    )
    monitor_dir = models.CharField(
        max_length=1024,
        blank=True,
        help_text="Monitor folder, relative to GYM_MONITOR_ROOT.",
    )
    monitor_video_every = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.ACTIVE, db_index=True
    )
    close_reason = models.CharField(max_length=200, blank=True)
    created = models.DateTimeField(default=now, editable=False)
    last_used = models.DateTimeField(default=now, db_index=True)
    closed = models.DateTimeField(null=True, blank=True)
    step_count = models.BigIntegerField(default=0)
    episode_count = models.BigIntegerField(default=0)
    last_error = models.CharField(
        max_length=400,
        blank=True,
        help_text="The last exception the environment's own code raised (reset, "
        "step, render or close), with where.",
    )
    last_error_at = models.DateTimeField(null=True, blank=True)
    action_space = models.JSONField(default=dict, blank=True, editable=False)
    observation_space = models.JSONField(default=dict, blank=True, editable=False)

    class Meta:
        ordering = ["-last_used"]
        verbose_name = "environment instance"

    def __str__(self) -> str:
        return f"{self.env_id} ({self.instance_id})"
