# The policy CodexOS applies to a tenant that has set none, and a starting
# point for one that writes its own. docs/policy.md explains it rule by
# rule. It allows by default, asks a person before destructive commands,
# and denies the few that are never right. Its settings live in the
# bundle's data, under "settings"; each example rule of docs/policy.md is a
# one-line change there.
package codexos

# ---------------------------------------------------------------- settings

# What each setting is when data.settings does not say.
default_settings := {
	# Tools (glob patterns) no call may use, and tools every call of which
	# waits for a person.
	"denied_tools": [],
	"ask_tools": [],
	# Agents (glob patterns on their names) that may `git push`.
	"git_push_agents": ["*"],
	# Ask before every recursive rm, not only those reaching outside the
	# workspace.
	"ask_any_rm_rf": false,
	# Destinations (glob patterns on "host:port") agents may reach.
	"network_allowed_hosts": ["*"],
	# When a list: only agents signed by one of these publishers (names or
	# key ids), their signature verified, may be installed or started.
	"trusted_publishers": null,
}

overrides := data.settings if {
	is_object(data.settings)
} else := {}

settings := object.union(default_settings, overrides)

# Mistakes in the settings: CodexOS evaluates `problems` when the policy
# is uploaded, and refuses a policy that has any.
problems contains "data.settings must be an object" if {
	data.settings
	not is_object(data.settings)
}

problems contains sprintf("data.settings.%s is not a setting of the default policy", [name]) if {
	some name, _ in overrides
	not name in object.keys(default_settings)
}

problems contains sprintf("data.settings.%s must be a list of patterns", [name]) if {
	some name in ["denied_tools", "ask_tools", "git_push_agents", "network_allowed_hosts"]
	not is_array(settings[name])
}

problems contains sprintf("data.settings.%s must be a list of patterns", [name]) if {
	some name in ["denied_tools", "ask_tools", "git_push_agents", "network_allowed_hosts"]
	is_array(settings[name])
	some item in settings[name]
	not is_string(item)
}

problems contains "data.settings.ask_any_rm_rf must be true or false" if {
	not is_boolean(settings.ask_any_rm_rf)
}

problems contains "data.settings.trusted_publishers must be null or a list of names" if {
	not is_null(settings.trusted_publishers)
	not is_array(settings.trusted_publishers)
}

problems contains "data.settings.trusted_publishers must be null or a list of names" if {
	is_array(settings.trusted_publishers)
	some item in settings.trusted_publishers
	not is_string(item)
}

# ----------------------------------------------------------------- helpers

# The agent concerned, its name and its signature's status, whatever the
# input leaves out.
agent := object.get(input, "agent", {})

agent_name := object.get(agent, "name", "(unnamed)")

signature_status := object.get(agent, ["signature", "status"], "unsigned")

# The simple commands of a shell call, each with the name of the program
# it runs (without its directory: /usr/bin/git is git); none for other
# calls.
commands := [{"program": program, "words": words} |
	some words in command_words
	parts := split(words[0], "/")
	program := parts[count(parts) - 1]
]

# A shell call's simple commands; for an install or a start, the commands
# of the agent's MCP servers, which run in the sandbox before any tool
# call is asked (the same rules judge them; an `ask` refuses an install).
command_words := input.shell.commands if {
	is_array(input.shell.commands)
} else := [words |
	input.action in {"install_agent", "start_execution"}
	some words in object.get(agent, "mcp_commands", [])
	is_array(words)
	count(words) > 0
]

matches_any(patterns, text) if {
	some pattern in patterns
	glob.match(pattern, null, text)
}

# ------------------------------------------------------------------- tools

deny contains sprintf("the tool %s is turned off by the tenant's policy", [input.tool]) if {
	input.action == "tool_call"
	matches_any(settings.denied_tools, input.tool)
}

ask contains sprintf("every call of %s needs approval by the tenant's policy", [input.tool]) if {
	input.action == "tool_call"
	matches_any(settings.ask_tools, input.tool)
}

# A shell command that does not parse cannot be checked: a person looks.
ask contains sprintf("the command could not be parsed (%s), so a person must read it", [why]) if {
	input.action == "tool_call"
	input.tool == "shell"
	not is_array(input.shell.commands)
	why := object.get(input.shell, "error", "unknown reason")
}

# ---------------------------------------------------------------------- rm

# rm with -r, -R or --recursive (with or without -f), and what it deletes:
# words before `--` that start with `-` are options, the rest targets.
recursive_removals := [{"words": command.words, "targets": targets} |
	some command in commands
	command.program == "rm"
	options := [word |
		some i, word in command.words
		i > 0
		startswith(word, "-")
		not double_dash_before(command.words, i)
	]
	recursive(options)
	targets := [word |
		some i, word in command.words
		i > 0
		word != "--"
		not option_at(command.words, i)
	]
]

recursive(options) if {
	some option in options
	regex.match(`^(-[a-zA-Z]*[rR]|--recursive)`, option)
}

option_at(words, i) if {
	startswith(words[i], "-")
	not double_dash_before(words, i)
}

double_dash_before(words, i) if {
	some j, word in words
	j < i
	word == "--"
}

# Targets no one means to delete: the file system's root, or home.
root_targets := {"/", "/*", "/.", "/.*", "~", "~/", "~/*", "$HOME", "$HOME/", "$HOME/*", "${HOME}", "${HOME}/", "${HOME}/*"}

wipes_root(removal) if {
	some target in removal.targets
	target in root_targets
}

wipes_root(removal) if {
	some target in removal.targets
	regex.match(`^/+\*?$`, target)
}

wipes_root(removal) if "--no-preserve-root" in removal.words

deny contains sprintf("`%s` would delete the whole file system or home directory", [concat(" ", removal.words)]) if {
	some removal in recursive_removals
	wipes_root(removal)
}

# A target is inside the workspace when it is a relative path without
# `..`, `~` or an expansion (and no `cd` moved the shell elsewhere), or an
# absolute path below the workspace.
inside_workspace(target) if {
	not startswith(target, "/")
	not startswith(target, "~")
	not contains(target, "$")
	not contains(target, "`")
	not leaves_directory(target)
	not changes_directory
}

inside_workspace(target) if {
	is_string(input.workspace)
	startswith(target, concat("", [trim_suffix(input.workspace, "/"), "/"]))
	not leaves_directory(target)
}

leaves_directory(target) if {
	some part in split(target, "/")
	part in {"..", ".*"}
}

changes_directory if {
	some command in commands
	command.program in {"cd", "pushd", "popd"}
}

ask contains sprintf("`%s` deletes outside the workspace", [concat(" ", removal.words)]) if {
	some removal in recursive_removals
	not wipes_root(removal)
	some target in removal.targets
	not inside_workspace(target)
}

ask contains sprintf("`%s` deletes recursively, which the tenant's policy asks about", [concat(" ", removal.words)]) if {
	settings.ask_any_rm_rf == true
	some removal in recursive_removals
}

# --------------------------------------------------------------------- git

# Each `git push`, with the words after `push`. git's subcommand is the
# first word after `git` that is neither an option nor an option's value.
git_pushes := [rest |
	some command in commands
	command.program == "git"
	subcommand := min({i |
		some i, word in command.words
		i > 0
		not startswith(word, "-")
		not command.words[i - 1] in {"-C", "-c", "--git-dir", "--work-tree", "--namespace", "--exec-path", "--config-env"}
	})
	command.words[subcommand] == "push"
	rest := array.slice(command.words, subcommand + 1, count(command.words))
]

deny contains sprintf("the agent %v may not `git push` (the tenant's policy allows it only for %s)", [agent_name, concat(", ", settings.git_push_agents)]) if {
	count(git_pushes) > 0
	not "*" in settings.git_push_agents
	not matches_any(settings.git_push_agents, agent_name)
}

# Rewriting or deleting what others pushed: --force and its relatives,
# +refspecs, --delete and :refspecs, --mirror, --prune.
ask contains sprintf("`git push %s` rewrites or deletes history on the remote", [concat(" ", push)]) if {
	some push in git_pushes
	some word in push
	regex.match(`^(--force|--mirror|--delete|--prune|-[a-zA-Z]*[fd]|[+:])`, word)
}

# ---------------------------------------------------- never right, or risky

deny contains sprintf("`%s` formats a file system", [concat(" ", command.words)]) if {
	some command in commands
	startswith(command.program, "mkfs")
}

deny contains sprintf("`%s` writes straight to a device", [concat(" ", command.words)]) if {
	some command in commands
	command.program == "dd"
	some word in command.words
	startswith(word, "of=/dev/")
	not word in {"of=/dev/null", "of=/dev/stdout", "of=/dev/stderr"}
}

deny contains "the command is a fork bomb" if {
	is_string(input.shell.raw)
	regex.match(`:[ \t]*\([ \t]*\)[ \t]*\{[^}]*:[ \t]*\|[ \t]*:`, input.shell.raw)
}

ask contains "the command runs a script downloaded from the network without reading it first" if {
	is_string(input.shell.raw)
	regex.match(`(curl|wget)([ \t][^;&|]*)?\|[ \t]*(sudo[ \t]+)?(ba|z|da|k)?sh([ \t;&|)]|$)`, input.shell.raw)
}

# ----------------------------------------------------------------- network

# Every destination the agent's manifest lets its tool calls reach, and
# its MCP servers over HTTP, must be allowed; so must each URL it fetches.
deny contains sprintf("the agent may reach %s, which the tenant's policy does not allow (allowed: %s)", [destination, concat(", ", settings.network_allowed_hosts)]) if {
	input.action in {"install_agent", "start_execution"}
	not "*" in settings.network_allowed_hosts
	some destination in array.concat(object.get(agent, "network", []), object.get(agent, "mcp_hosts", []))
	not matches_any(settings.network_allowed_hosts, destination)
}

deny contains sprintf("%s is not a destination the tenant's policy allows (allowed: %s)", [input.destination, concat(", ", settings.network_allowed_hosts)]) if {
	input.action == "tool_call"
	is_string(input.destination)
	not "*" in settings.network_allowed_hosts
	not matches_any(settings.network_allowed_hosts, input.destination)
}

# A fetch whose URL gives no destination cannot be checked: refused while
# destinations are restricted (fail closed).
deny contains "the URL to fetch names no http(s) destination the tenant's policy could check" if {
	input.action == "tool_call"
	input.tool == "http_fetch"
	not "*" in settings.network_allowed_hosts
	not is_string(input.destination)
}

# ------------------------------------------------------------- publishers

trusted_agent if {
	signature_status == "verified"
	some trusted in settings.trusted_publishers
	trusted in {object.get(agent, "publisher", null), object.get(agent, ["signature", "key_id"], null)}
}

deny contains sprintf("only agents signed by %s may be installed or run; %v is %s", [concat(", ", settings.trusted_publishers), agent_name, signature_text]) if {
	input.action in {"install_agent", "start_execution"}
	is_array(settings.trusted_publishers)
	not trusted_agent
}

signature_text := "unsigned" if {
	signature_status == "unsigned"
} else := sprintf("signed by %v (%v)", [object.get(agent, "publisher", null), signature_status])
