from django.contrib import admin

from .models import HookCalls, Message


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["room", "livechat_id", "user", "text", "ts"]
    list_filter = ["room"]
    search_fields = ["text"]


admin.site.register(HookCalls)
