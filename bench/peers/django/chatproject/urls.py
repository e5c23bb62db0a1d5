from django.urls import path

from chat import views

urlpatterns = [
    path("chat/send/", views.send),
    path("chat/history/", views.history),
]
