"""The app's own page: who you are and where to chat."""
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from .rooms import rooms_for


@login_required
def home(request):
    return render(
        request,
        "chat/home.html",
        {"rooms": rooms_for(request.user), "lobby_url": f"{settings.LIVECHAT_PUBLIC_URL}/ws/chat/lobby/"},
    )
