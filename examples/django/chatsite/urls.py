from django.contrib import admin
from django.urls import include, path

from chat import hooks, views

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
    # Called by livechat: LIVECHAT_CONNECT_HOOK, LIVECHAT_PUBLISH_HOOK, LIVECHAT_WEBHOOK_URL.
    path("livechat/connect", hooks.connect, name="livechat-connect"),
    path("livechat/publish", hooks.publish, name="livechat-publish"),
    path("livechat/events", hooks.events, name="livechat-events"),
]
