"""The Flask extensions, created unbound and attached in ``create_app``."""

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import MetaData

# Named constraints, so Alembic migrations can alter them on every database.
db = SQLAlchemy(
    metadata=MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
)
migrate = Migrate()
#: Members' and operators' sessions on the web pages (app.web).
login_manager = LoginManager()
#: Every form of the web pages carries a CSRF token; the JSON API, authenticated by bearer
#: tokens and never by cookies, is exempt (app.api.register).
csrf = CSRFProtect()
#: Counts in the broker's Redis (create_app), so every API process shares them; only the routes
#: that name a limit are limited.
limiter = Limiter(get_remote_address)
