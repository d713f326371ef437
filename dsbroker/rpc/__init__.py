"""What both servers do with a call: statuses, request fields, call conventions, serving."""
