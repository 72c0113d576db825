"""Azure Functions entry point (Python v2 model).

Only decorators run at import: no setting is read and no client is built here, so indexing
cannot fail on configuration (a bad setting is reported by the first invocation instead).
"""

import azure.functions as func

from handlers.evaluate import bp as evaluate_bp
from handlers.events import bp as events_bp
from handlers.status import bp as status_bp
from handlers.sweep import bp as sweep_bp

app = func.FunctionApp()
app.register_blueprint(events_bp)
app.register_blueprint(evaluate_bp)
app.register_blueprint(sweep_bp)
app.register_blueprint(status_bp)
