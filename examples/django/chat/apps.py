from django.apps import AppConfig


class ChatConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "chat"

    def ready(self):
        from django.contrib.auth import get_user_model
        from django.db.models.signals import post_save

        from .backend import account_saved

        post_save.connect(account_saved, sender=get_user_model(), dispatch_uid="livechat-account-saved")
