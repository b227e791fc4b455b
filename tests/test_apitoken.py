import pytest
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # personas, fast


def test_it_creates_and_prints_a_token_for_a_user(personas, capsys):
    call_command("apitoken", "viewer")

    key = capsys.readouterr().out.strip()
    assert key == Token.objects.get(user=personas["viewer"]).key


def test_it_prints_the_same_token_again(personas, capsys):
    call_command("apitoken", "staff")
    call_command("apitoken", "staff")

    first, second = capsys.readouterr().out.split()
    assert first == second
    assert Token.objects.count() == 1


def test_the_printed_token_opens_the_api(personas, capsys, client, settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    call_command("apitoken", "viewer")
    key = capsys.readouterr().out.strip()

    assert client.get("/api/v1/services", HTTP_AUTHORIZATION=f"Token {key}").status_code == 200
    assert client.get("/api/v1/services", HTTP_AUTHORIZATION="Token not-a-key").status_code == 401


def test_it_exits_1_with_a_message_for_an_unknown_user(personas):
    # manage.py prints a CommandError's message to stderr and exits with its returncode.
    with pytest.raises(CommandError, match="no user named 'nobody'") as error:
        call_command("apitoken", "nobody")

    assert error.value.returncode == 1
    assert not Token.objects.exists()
