from django.apps import AppConfig


class EnvsApiConfig(AppConfig):
    name = "envs_api"
    verbose_name = "Environments"

    def ready(self) -> None:
        from envs_api import signals  # needs the user model: only once apps are ready
        from envs_api.runtime import legacy

        signals.connect()
        legacy.register()  # the retired gym envs old clients still ask for
