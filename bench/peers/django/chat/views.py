"""The seed's HTTP endpoints: send to a room's group (the body's "room", else "lobby"), and the
placeholder history."""
import json

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt


@csrf_exempt
def send(request):
    body = json.loads(request.body)
    room = body.get("room", "lobby")
    async_to_sync(get_channel_layer().group_send)(
        "chat_%s" % room, {"type": "chat_message", "message": body["message"]}
    )
    return JsonResponse({"message": "Message sent!"})


def history(request):
    return JsonResponse({"chat_history": []})
