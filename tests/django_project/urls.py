"""URLs of the test project."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("hello", views.hello),
    path("sleep", views.sleep),
    path("atomic", views.atomic),
    path("count", views.count),
    path("async", views.async_view),
    path("async-orm", views.async_orm_direct),
    path("async-asgiref", views.async_asgiref),
    path("boom", views.boom),
    path("pooled", views.pooled),
    path("close-pool", views.close_pool),
    path("persistent", views.persistent),
    path("request", views.request_info),
    path("upload", views.upload),
    path("stream", views.stream),
    path("async-stream", views.async_stream),
    path("endless-stream", views.endless_stream),
    path("async-endless-stream", views.async_endless_stream),
]
