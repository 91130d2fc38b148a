{{- /* TLS (values: tls.*). Secret names default to the ones cert-manager writes when the chart's
cert-manager set is on; without it they are required. Mount paths are fixed here, and the
flags in controller.yaml and proxy.yaml point into them. */ -}}

{{- define "memzone.tls.secret" -}}
{{- if .name -}}
{{- .name -}}
{{- else if .root.Values.tls.certManager.enabled -}}
{{- printf "%s-%s" (include "memzone.fullname" .root) .suffix -}}
{{- else -}}
{{- fail (printf "%s is required unless tls.certManager.enabled" .value) -}}
{{- end -}}
{{- end -}}

{{- define "memzone.tls.controllerSecret" -}}
{{- include "memzone.tls.secret" (dict "root" . "name" .Values.tls.controllerStream.controllerSecret "suffix" "controller-tls" "value" "tls.controllerStream.controllerSecret") -}}
{{- end -}}

{{- define "memzone.tls.proxySecret" -}}
{{- include "memzone.tls.secret" (dict "root" . "name" .Values.tls.controllerStream.proxySecret "suffix" "proxy-tls" "value" "tls.controllerStream.proxySecret") -}}
{{- end -}}

{{- define "memzone.tls.proxyClientsSecret" -}}
{{- include "memzone.tls.secret" (dict "root" . "name" .Values.tls.proxyClients.secret "suffix" "proxy-clients-tls" "value" "tls.proxyClients.secret") -}}
{{- end -}}

{{- /* The name proxies check the controller's certificate against: its headless Service. */ -}}
{{- define "memzone.tls.controllerServerName" -}}
{{- default (printf "%s-controller-headless.%s.svc" (include "memzone.fullname" .) .Release.Namespace) .Values.tls.controllerStream.serverName -}}
{{- end -}}

{{- /* The proxies' identity in the certificate cert-manager issues them (a URI SAN). */ -}}
{{- define "memzone.tls.proxyIdentity" -}}
{{- printf "spiffe://%s/ns/%s/sa/%s-proxy" .Values.tls.certManager.trustDomain .Release.Namespace (include "memzone.fullname" .) -}}
{{- end -}}

{{- /* The controller replicas' identity (a URI SAN): they dial each other with it to share
dirty servers, checked like a proxy's. */ -}}
{{- define "memzone.tls.controllerIdentity" -}}
{{- printf "spiffe://%s/ns/%s/sa/%s-controller" .Values.tls.certManager.trustDomain .Release.Namespace (include "memzone.fullname" .) -}}
{{- end -}}

{{- define "memzone.tls.allowedIdentities" -}}
{{- if .Values.tls.controllerStream.allowedIdentities -}}
{{- join "," .Values.tls.controllerStream.allowedIdentities -}}
{{- else if .Values.tls.certManager.enabled -}}
{{- include "memzone.tls.proxyIdentity" . -}},{{- include "memzone.tls.controllerIdentity" . -}}
{{- end -}}
{{- end -}}
