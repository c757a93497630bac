"""Django configured in a few lines, for one-file test apps whose module holds
the URL patterns (its `urlpatterns`)."""


def application(urlconf):
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="ferricorn-tests-only",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=urlconf,
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
    )
    django.setup()
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()
