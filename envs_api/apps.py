import logging
import os

from django.apps import AppConfig

from envs_api.runtime import HEADLESS


class EnvsApiConfig(AppConfig):
    name = "envs_api"
    verbose_name = "Environments"

    def ready(self) -> None:
        from envs_api import signals  # needs the user model: only once apps are ready
        from envs_api.runtime import atari, legacy

        for name, value in HEADLESS.items():
            os.environ.setdefault(name, value)
        signals.connect()
        legacy.register()  # the retired gym envs old clients still ask for
        atari.register()  # ale-py's games, when it is installed
        _mujoco_warnings_to_the_log()


def _mujoco_warnings_to_the_log() -> None:
    """MuJoCo (requirements-mujoco.txt) writes its warnings to MUJOCO_LOG.TXT in the
    working directory (HalfCheetah's model gives one at every make): send them to the
    server's log instead."""
    try:
        import mujoco
    except ImportError:
        return
    log = logging.getLogger("mujoco")
    mujoco.set_mju_user_warning(lambda text: log.warning("%s", text))
