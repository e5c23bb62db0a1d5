import json

from django.core.management.base import BaseCommand

from chat.models import HookCalls, Message


class Command(BaseCommand):
    help = "Prints, as JSON, how many times livechat called each hook and how many messages are recorded."

    def handle(self, *args, **options):
        calls = dict(HookCalls.objects.values_list("hook", "count"))
        stats = {"connect_calls": calls.get("connect", 0), "messages": Message.objects.count()}
        self.stdout.write(json.dumps(stats))
