"""Real local servers (feed server, fake Telegram Bot API) the tests run the product against."""
