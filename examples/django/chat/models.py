"""What the app keeps of the chat: the messages livechat's webhooks told it about, and how often
livechat asked the hooks."""
from django.conf import settings
from django.db import models
from django.db.models import F


class Message(models.Model):
    """A message as livechat stored it, recorded once from its `message` webhook event."""

    livechat_id = models.BigIntegerField(help_text="livechat's id of the message within its room")
    room = models.CharField(max_length=94)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="chat_messages"
    )
    text = models.TextField(help_text="the message; JSON text when it is not a string")
    ts = models.DateTimeField(help_text="when livechat stored it")
    event_id = models.CharField(
        max_length=128, unique=True, help_text="the webhook event's id: a redelivered event is recorded once"
    )

    class Meta:
        ordering = ["room", "livechat_id"]
        indexes = [models.Index(fields=["room", "livechat_id"])]

    def __str__(self):
        return f"#{self.room} {self.livechat_id}: {self.text[:50]}"


class HookCalls(models.Model):
    """How many times livechat called a hook (a row per hook), counted across every worker."""

    hook = models.CharField(max_length=16, primary_key=True)
    count = models.PositiveBigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "hook calls"

    @classmethod
    def record(cls, hook: str) -> None:
        if not cls.objects.filter(hook=hook).update(count=F("count") + 1):
            cls.objects.get_or_create(hook=hook)
            cls.objects.filter(hook=hook).update(count=F("count") + 1)

    def __str__(self):
        return f"{self.hook}: {self.count}"
