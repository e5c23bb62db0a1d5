"""Who may enter which room: the rooms in LIVECHAT_OPEN_ROOMS for every signed-in user, the rooms
`NAME-*` for members of the group NAME, every room for superusers. The list is livechat's `rooms`
claim: an entry ending in `*` is a prefix."""
import re

from django.conf import settings

ROOM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,94}$")


def rooms_for(user) -> list[str] | str:
    if user.is_superuser:
        return "*"
    group_rooms = [f"{name}-*" for name in user.groups.values_list("name", flat=True) if ROOM_NAME.match(name)]
    return list(settings.LIVECHAT_OPEN_ROOMS) + sorted(group_rooms)


def may_enter(rooms: list[str] | str, room: str) -> bool:
    if rooms == "*":
        return True
    return any(room.startswith(entry[:-1]) if entry.endswith("*") else room == entry for entry in rooms)
