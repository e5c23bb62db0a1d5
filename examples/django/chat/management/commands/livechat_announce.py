from django.core.management.base import BaseCommand, CommandError
from livechat import LivechatError

from chat.backend import announce


class Command(BaseCommand):
    help = "Posts an announcement to livechat rooms (LIVECHAT_URL, with the server key LIVECHAT_API_KEY)."

    def add_arguments(self, parser):
        parser.add_argument("text")
        parser.add_argument("--room", action="append", required=True, help="a room (repeat for several, up to 100)")

    def handle(self, *args, text, room, **options):
        try:
            rooms = announce(room, text)
        except (LivechatError, OSError) as error:
            raise CommandError(f"livechat did not take the announcement: {error}") from error
        for each in rooms:
            self.stdout.write(f"{each['room']}: message {each['id']}")
