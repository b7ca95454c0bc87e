from django.apps import AppConfig


class EnvsApiConfig(AppConfig):
    name = "envs_api"
    verbose_name = "Environments"
