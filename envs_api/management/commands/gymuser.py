"""Create a user (or find one) and print their API token."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = "Create a user (or take an existing one) and print their API token."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--staff", action="store_true", help="make the user staff")
        parser.add_argument(
            "--rotate",
            action="store_true",
            help="replace the user's token with a new one",
        )

    def handle(self, *args: Any, **options: Any) -> str:
        User = get_user_model()
        username = options["username"]
        field = User._meta.get_field(User.USERNAME_FIELD)
        try:
            field.run_validators(username)
        except Exception as exc:
            raise CommandError(f"Invalid username {username!r}: {exc}") from None
        with transaction.atomic():
            user, created = User.objects.get_or_create(
                **{User.USERNAME_FIELD: username}
            )
            if created:
                user.set_unusable_password()  # token only, until they set one
            if options["staff"] and not user.is_staff:
                user.is_staff = True
            user.save()
            if options["rotate"]:
                Token.objects.filter(user=user).delete()
            token, _ = Token.objects.get_or_create(user=user)
        if options["verbosity"] > 1:
            self.stderr.write(f"{'created' if created else 'found'} user {username}")
        return token.key
